"""A family is one module in lapr/models: the adapters lapr.models registers are the ones lapr.families
reads without importing them, and no code outside lapr/models and lapr/backends branches on a family."""
import ast
from pathlib import Path

import pytest

from lapr import families
from lapr.models import FAMILIES
from lapr.models.base import Family

ROOT = Path(__file__).resolve().parents[2]
FAMILY_HOMES = ("lapr/models/", "lapr/backends/")


def test_declared_families_are_the_registered_adapters():
    declared = families.declared()
    assert list(declared) == list(FAMILIES) and len(FAMILIES) >= 3
    for name, facts in declared.items():
        adapter = FAMILIES[name]
        assert isinstance(adapter, Family) and adapter.model_type == name
        assert (adapter.display_name, adapter.color, adapter.aliases) == \
            (facts["display_name"], facts["color"], facts["aliases"])
        assert type(adapter).__module__ == f"lapr.models.{facts['module']}"


def test_a_new_module_is_a_new_family(tmp_path):
    """The recipe: a module with a Family subclass (any file name) is found, nothing else to edit."""
    for path in (ROOT / "lapr/models").glob("*.py"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "toy.py").write_text(
        'from lapr.models.base import Family\n\n\nclass ToyFamily(Family):\n    model_type = "toy"\n'
        '    display_name = "Toy"\n')
    declared = families.declared(tmp_path)
    assert set(declared) == set(FAMILIES) | {"toy"}
    assert declared["toy"]["module"] == "toy" and declared["toy"]["display_name"] == "Toy"


def _names() -> set[str]:
    return {alias for name, facts in families.declared().items() for alias in (name, *facts["aliases"])}


def _family_constants(node, names) -> list[str]:
    """Family names among the string constants of an expression (a constant, or a tuple/list/set)."""
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and n.value in names]


def family_branches(root: Path = ROOT) -> list[str]:
    """'path:line: code' of every comparison with a family name and every dict keyed by family names
    in lapr's Python sources outside lapr/models and lapr/backends."""
    names, found = _names(), []
    for path in sorted((root / "lapr").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(FAMILY_HOMES):
            continue
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, rel)):
            hits = []
            if isinstance(node, ast.Compare):
                for operand in (node.left, *node.comparators):
                    hits += _family_constants(operand, names)
            elif isinstance(node, ast.Dict):
                hits += [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in names]
            elif isinstance(node, ast.Match):
                hits += [c.pattern.value.value for c in node.cases if isinstance(c.pattern, ast.MatchValue)
                         and isinstance(c.pattern.value, ast.Constant) and c.pattern.value.value in names]
            if hits:
                found.append(f"{rel}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_no_family_branch_outside_models_and_backends():
    assert family_branches() == []


def test_the_branch_finder_finds_branches(tmp_path):
    (tmp_path / "lapr/models").mkdir(parents=True)
    (tmp_path / "lapr/x.py").write_text('def f(cfg):\n    if cfg.model_type == "gated_deltanet":\n'
                                        '        return 1\n    return {"gla": 2}\n')
    (tmp_path / "lapr/models/ok.py").write_text('A = "gla" == "gla"\n')
    assert [line.split(": ")[0] for line in family_branches(tmp_path)] == ["lapr/x.py:2", "lapr/x.py:4"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_answers_every_fact(name):
    """Each adapter implements what the stages ask (no NotImplementedError left from the base)."""
    fam = FAMILIES[name]
    spec = dict(family=name, hidden_size=32, num_layers=1, num_heads=2, head_k_dim=8, head_v_dim=8,
                vocab_size=32)
    config = fam.config_from_spec(spec)
    assert fam.head_k_dim_of(config.to_dict()) == 8
    assert fam.head_k_dim_of(fam.resized_config(config, 4).to_dict()) == 4
    assert fam.cpu_ops() and fam.state_op() and fam.head_params
    assert callable(fam.op_kernel("prefill", "torch")) and callable(fam.op_kernel("decode", "torch"))
