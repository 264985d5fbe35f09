"""lapr.settings (a stage's --settings) and the direction of imports: stages never import lapr.cli."""
import argparse
import ast
from pathlib import Path

import pytest

from lapr.settings import UsageError, settings_argument, settings_object

LAPR = Path(__file__).resolve().parents[1] / "lapr"
# lapr.cli imports the stages; a stage importing it back would import every stage's CLI module.
CLI_IMPORTERS = {"__main__.py"}


@pytest.mark.parametrize("raw, expected", [({"a": 1}, {"a": 1}), ('{"a": 1}', {"a": 1}), ("", {}), ("  ", {})])
def test_settings_object(raw, expected):
    assert settings_object(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ("{a: 1}", "--settings is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
               "(char 1)"),
    ("[1]", "--settings must be a JSON object, got list"),
    ([1], "--settings must be a JSON object, got list"),
    (None, "--settings must be a JSON object, got NoneType"),
])
def test_settings_object_refuses(raw, message):
    with pytest.raises(UsageError) as e:
        settings_object(raw)
    assert str(e.value) == message and isinstance(e.value, ValueError)


def test_settings_argument():
    assert settings_argument('{"steps": 2}') == {"steps": 2}
    for text, message in (("", "--settings is empty: pass a JSON object ('{}' for none)"),
                          ("[]", "--settings must be a JSON object, got list")):
        with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            settings_argument(text)


def _imports_cli(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name == "lapr.cli" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module == "lapr.cli" or (
                node.module == "lapr" and any(a.name == "cli" for a in node.names))):
            return True
    return False


def test_only_the_entry_point_imports_the_cli():
    importers = {str(p.relative_to(LAPR)) for p in LAPR.rglob("*.py") if _imports_cli(p)}
    assert importers <= CLI_IMPORTERS, sorted(importers - CLI_IMPORTERS)
    assert "__main__.py" in importers
