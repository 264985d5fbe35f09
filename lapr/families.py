"""The model families lapr adapts, read without importing torch or fla.

Each family is one module in lapr/models holding a subclass of a lapr.models.base family class
(`Family`, or `ExpandFamily` for expand_k/expand_v configs; any base named *Family) whose class
body sets `model_type = "..."` (and `display_name`, `color`, `aliases` for reports). `declared()`
reads those constants from the module sources with `ast`, so the config check (every Snakefile parse)
and the report's styles know the families without the ~10-20 s import of torch and fla;
lapr.models imports exactly these modules, and tests/models/test_families.py checks that both agree.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

MODELS = Path(__file__).resolve().parent / "models"
FACTS = ("model_type", "display_name", "color", "aliases")


@functools.lru_cache(maxsize=None)
def declared(package: Path = MODELS) -> dict[str, dict]:
    """{model_type: {"module": module name, "display_name", "color", "aliases"}} of every family
    module in `package`, in file-name order."""
    out: dict[str, dict] = {}
    for path in sorted(package.glob("*.py")):
        if path.name.startswith("_") or path.name == "base.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
            if not isinstance(node, ast.ClassDef) or not any(
                    str(getattr(b, "id", getattr(b, "attr", ""))).endswith("Family") for b in node.bases):
                continue
            facts = {}
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                        and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id in FACTS:
                    try:
                        facts[stmt.targets[0].id] = ast.literal_eval(stmt.value)
                    except ValueError:
                        pass
            if facts.get("model_type"):
                out[facts["model_type"]] = {"module": path.stem, "class": node.name,
                                            "display_name": facts.get("display_name") or facts["model_type"],
                                            "color": facts.get("color", ""),
                                            "aliases": tuple(facts.get("aliases", ()))}
    return out


def names() -> tuple[str, ...]:
    """The model_type of every family, sorted."""
    return tuple(sorted(declared()))


__all__ = ["declared", "names"]
