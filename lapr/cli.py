"""One command line for every stage: `python -m lapr <stage> [options]` (Snakemake rules call this).

A stage is a module with `add_arguments(parser)` and `run(args)`; adding one is one line in STAGES.
Stage modules are imported only when their stage runs, so `lapr --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

STAGES = {
    "tokens": ("lapr.data.stage", "tokenise a shipped corpus into an int32 .npy stream"),
    "pretrain": ("lapr.train.stage", "train a small DeltaNet / GatedDeltaNet from scratch"),
    "fetch": ("lapr.models.fetch", "download a hub checkpoint into results/ (online profiles)"),
    "profile": ("lapr.profiling.stage", "state-rank profiling and calibration statistics"),
    "prune": ("lapr.pruning.stage", "query/key channel pruning of one checkpoint"),
    "evaluate": ("lapr.eval.stage", "perplexity and lm-eval tasks of one checkpoint"),
    "heads": ("lapr.heads.stage", "whole-head pruning by state rank / norm (paper B) with ppl and NIAH"),
    "mqar-train": ("lapr.probes.mqar_train", "train a small MQAR model"),
    "mqar-eval": ("lapr.probes.mqar_eval", "MQAR recall under channel / head pruning and query noise"),
    "bench": ("lapr.bench.stage", "kernel / model throughput and memory"),
    "figures": ("lapr.report.stage", "tables and figures from results/"),
}


def settings_object(raw) -> dict:
    """A stage's settings given as a dict or a JSON object string ('' or blank: no settings);
    ValueError for anything else, so library callers and the CLI get the same messages."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"--settings is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--settings must be a JSON object, got {type(raw).__name__}")
    return raw


def settings(text: str) -> dict:
    """argparse type for --settings (train, data stages): settings_object's rules, but a blank value
    is an error here, as it always was for these stages."""
    if not text.strip():
        raise argparse.ArgumentTypeError("--settings is empty: pass a JSON object ('{}' for none)")
    try:
        return settings_object(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lapr", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, (_, help_) in STAGES.items():
        sub.add_parser(name, help=help_, add_help=False)
    return top


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STAGES:
        parser().parse_args(argv)  # prints usage / the list of stages, exits
        return
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(STAGES[name][0])
    stage = argparse.ArgumentParser(prog=f"lapr {name}", description=STAGES[name][1])
    module.add_arguments(stage)
    module.run(stage.parse_args(rest))


if __name__ == "__main__":
    main()
