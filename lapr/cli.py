"""One command line for every stage: `python -m lapr <stage> [options]` (Snakemake rules call this).

A stage is a module with `add_arguments(parser)` and `run(args)`; adding one is one line in STAGES.
Stage modules are imported only when their stage runs, so `lapr --help` stays fast.

A failing stage prints one line, `lapr <stage>: error: <message>`, to stderr and exits 2 for a
malformed command line (argparse, --settings that is not a JSON object) and 1 for anything else;
`lapr --debug <stage> ...` (or `lapr <stage> --debug ...`, or LAPR_DEBUG=1) shows the traceback
instead. Stages raise ordinary exceptions (ValueError, FileNotFoundError, ...) whose message
names the key, file or value.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

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


class UsageError(ValueError):
    """A command line that cannot be parsed (exit 2, like argparse's own errors)."""


def settings_object(raw) -> dict:
    """A stage's settings given as a dict or a JSON object string ('' or blank: no settings);
    UsageError (a ValueError) for anything else, so library callers and the CLI get the same
    messages."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as e:
            raise UsageError(f"--settings is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--settings must be a JSON object, got {type(raw).__name__}")
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


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other failure (the usage is a --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="lapr", description=__doc__.splitlines()[0])
    top.add_argument("--debug", action="store_true",
                     help="show the full traceback of a failure (also: LAPR_DEBUG=1)")
    sub = top.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, (_, help_) in STAGES.items():
        sub.add_parser(name, help=help_, add_help=False)
    return top


def message(e: BaseException) -> str:
    """One line for an exception: the message of a refused input (ValueError, OSError, KeyError);
    for anything else, which is more likely a bug, also its type and where the traceback is."""
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else str(e)  # str() quotes a KeyError
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    if isinstance(e, (ValueError, OSError, KeyError)) and text:
        return text
    return f"{type(e).__name__}{': ' + text if text else ''} (lapr --debug shows the traceback)"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("LAPR_DEBUG", "").strip() not in ("", "0")
    while argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    if not argv or argv[0] not in STAGES:
        parser().parse_args(argv)  # prints usage / the list of stages, exits
        return
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(STAGES[name][0])
    stage = Parser(prog=f"lapr {name}", description=STAGES[name][1])
    module.add_arguments(stage)
    stage.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    args = stage.parse_args(rest)  # a usage error exits 2 here (Parser.error)
    try:
        module.run(args)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line (KeyboardInterrupt is not an Exception)
        if debug or args.debug:
            traceback.print_exc()
        else:
            print(f"lapr {name}: error: {message(e)}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UsageError) else 1)


if __name__ == "__main__":
    main()
