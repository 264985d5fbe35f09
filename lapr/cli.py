"""One command line for every stage: `python -m lapr <stage> [options]` (Snakemake rules call this).

A stage is a module with `add_arguments(parser)` and `run(args)`; adding one is one line in STAGES.
Stage modules are imported only when their stage runs, so `lapr --help` stays fast.

A failing stage prints one line, `lapr <stage>: error: <message>`, to stderr and exits 2 for an
input it refuses (a malformed command line, --settings that is not a JSON object, a missing file, a
bad value: the caller's to fix) and 1 for anything else (more likely a bug: see below);
`lapr --debug <stage> ...` (or `lapr <stage> --debug ...`, or LAPR_DEBUG=1) shows the traceback
instead. Stages refuse an input by raising ValueError, OSError (FileNotFoundError, ...) or KeyError
with a message naming the key, file or value: that message is the whole line. Any other exception
(RuntimeError, TypeError, ...) is more likely a bug: its traceback comes first, so that a long job's
log says where it failed without a rerun, and the one line (with the exception's type) last.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from lapr.settings import UsageError

STAGES = {
    "tokens": ("lapr.data.stage", "tokenise a shipped corpus into an int32 .npy stream"),
    "pretrain": ("lapr.train.stage", "train a small model of an adapted family (DeltaNet, Gated DeltaNet, GLA) from scratch"),
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


REFUSED = (ValueError, OSError, KeyError)  # what a stage raises for an input it refuses


def _text(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else str(e)  # str() quotes a KeyError
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def refused(e: BaseException) -> bool:
    """Whether `e` is a refused input (one of REFUSED, with a message) rather than a likely bug."""
    return isinstance(e, REFUSED) and bool(_text(e))


def message(e: BaseException) -> str:
    """One line for an exception: the message of a refused input; for anything else, which is more
    likely a bug, also its type."""
    text = _text(e)
    if refused(e):
        return text
    return f"{type(e).__name__}{': ' + text if text else ''} (an unexpected error: the traceback is above)"


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
    except Exception as e:  # noqa: BLE001 - every failure ends in one line (KeyboardInterrupt is not an Exception)
        debugging = debug or args.debug
        if debugging or not refused(e):
            traceback.print_exc()
        if not debugging:
            print(f"lapr {name}: error: {message(e)}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UsageError) or refused(e) else 1)


if __name__ == "__main__":
    main()
