"""Outputs never overwrite inputs: every stage checks its paths with `check_outputs` before any work.

An output that is an input replaces it (`prune --model X --out X` swapped the source checkpoint
for the pruned one); one that contains an input deletes it when the atomic write replaces the
folder; one inside an input folder changes that input. All three are refused, after resolving
relative paths and symlinks, with a message that names both paths.
"""
from __future__ import annotations

import os
from pathlib import Path


def local(name) -> str | None:
    """`name` when it is an existing path, else None: for options that take a shipped name or a
    path (tokenizers, token data); only a path can be overwritten."""
    return str(name) if name and os.path.exists(name) else None


def _items(paths: dict) -> list[tuple[str, str]]:
    """{flag: path | [paths] | None} -> (flag, path) pairs, Nones dropped."""
    out = []
    for flag, value in paths.items():
        for p in value if isinstance(value, (list, tuple)) else [value]:
            if p is not None and str(p) != "":
                out.append((flag, str(p)))
    return out


def check_outputs(outputs: dict, inputs: dict) -> None:
    """ValueError for an output that is, contains or lies inside an input.

    outputs, inputs: {flag: path, list of paths or None}, e.g. {"--out": args.out} and
    {"--model": args.model, "--calib": args.calib}; the flags name the paths in the message.
    """
    ins = [(flag, p, Path(p).resolve()) for flag, p in _items(inputs)]
    for oflag, out in _items(outputs):
        o = Path(out).resolve()
        for iflag, inp, i in ins:
            if o == i:
                how = "is"
            elif o in i.parents:
                how = "contains"
            elif i in o.parents:
                how = "lies inside"
            else:
                continue
            link = f" (resolves to {o})" if Path(os.path.abspath(out)) != o else ""  # a symlink
            raise ValueError(f"{oflag} {out}{link} {how} the input {iflag} {inp}: writing it would change "
                             f"that input; choose another output path")


__all__ = ["check_outputs", "local"]
