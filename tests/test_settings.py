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


# ----------------------------------------------------------------------------- the settings models

from dataclasses import dataclass  # noqa: E402

from lapr.settings import Settings, SettingsError, setting  # noqa: E402


@dataclass
class Inner(Settings):
    """A nested section."""

    SECTION = "demo.inner"
    rows: int = setting(4, low=1)


@dataclass
class Demo(Settings):
    """A model with one field of each kind."""

    SECTION = "demo"
    T: int | None = setting(None, low=2)
    eps: float = setting(1e-4, above=0, below=1)
    names: list[str] = setting(["a"], min_items=1, unique=True, items=dict(choices=("a", "b")))
    rule: str = setting("fraction", choices=("fraction", "gap"))
    flag: bool = True
    inner: Inner = setting(Inner())
    maybe: Inner | None = None


def test_model_defaults_and_values():
    assert Demo.parse(None).as_dict() == {"T": None, "eps": 1e-4, "names": ["a"], "rule": "fraction", "flag": True,
                                          "inner": {"rows": 4}, "maybe": None}
    s = Demo.parse('{"T": 8.0, "names": ["b", "a"], "inner": {"rows": 2}, "maybe": {}}')
    assert s.T == 8 and type(s.T) is int and s.names == ["b", "a"] and s.inner.rows == 2 and s.maybe.rows == 4
    a, b = Demo.parse({}), Demo.parse({})
    a.names.append("b")
    assert b.names == ["a"]  # mutable defaults are per instance


@pytest.mark.parametrize("raw, message", [
    ({"t": 3}, "demo.t: unknown key; allowed: T, eps, flag, inner, maybe, names, rule"),
    ({"T": "2048"}, "demo.T: expected an integer >= 2 or null, got '2048'"),
    ({"T": 1}, "demo.T: expected an integer >= 2 or null, got 1"),
    ({"T": True}, "demo.T: expected an integer >= 2 or null, got True"),
    ({"eps": 1}, "demo.eps: expected a number in (0, 1), got 1"),
    ({"names": ["a", "c"]}, "demo.names.1: expected one of 'a', 'b', got 'c'"),
    ({"names": []}, "demo.names: expected a non-empty list of values among 'a', 'b', got []"),
    ({"names": ["a", "a"]}, "demo.names: ['a', 'a'] has non-unique elements"),
    ({"rule": "median"}, "demo.rule: expected one of 'fraction', 'gap', got 'median'"),
    ({"flag": "yes"}, "demo.flag: expected true or false, got 'yes'"),
    ({"inner": {"rowz": 1}}, "demo.inner.rowz: unknown key; allowed: rows"),
    ({"inner": 3}, "demo.inner: expected an object, got 3"),
    ({"maybe": {"rows": 0}}, "demo.maybe.rows: expected an integer >= 1, got 0"),
    ({"maybe": 5}, "demo.maybe: expected an object or null, got 5"),
])
def test_model_refuses_with_one_line_naming_the_key(raw, message):
    with pytest.raises(SettingsError) as e:
        Demo.parse(raw)
    assert str(e.value) == message and isinstance(e.value, ValueError)
