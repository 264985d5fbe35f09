"""A stage's `--settings`: one JSON object, read the same way by the command line and by library callers.

The stages import this module, never lapr.cli (which imports the stages); lapr.cli exits 2 for a
UsageError, like argparse's own errors, or any other refused input, and 1 for a likely bug.
"""
from __future__ import annotations

import argparse
import json


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


def settings_argument(text: str) -> dict:
    """argparse type for --settings (train, data stages): settings_object's rules, but a blank value
    is an error here, as it always was for these stages."""
    if not text.strip():
        raise argparse.ArgumentTypeError("--settings is empty: pass a JSON object ('{}' for none)")
    try:
        return settings_object(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


__all__ = ["UsageError", "settings_argument", "settings_object"]
