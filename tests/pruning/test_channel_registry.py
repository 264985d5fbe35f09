"""The channel-method registry (issue 19): every method module declares its calibration needs in
`@register(name, requires=...)`; REQUIRES, ROTATIONS and ALL_METHODS derive from it, and the
workflow's config check reads the same names without importing torch."""
import subprocess
import sys

import pytest
import yaml

from lapr import config as cfgcheck
from lapr.pruning import channels
from lapr.pruning.channels import ALL_METHODS, METHODS, REGISTRY, REQUIRES, ROTATIONS, register

# The hand-written table this registry replaced (lapr/pruning/channels/__init__.py before issue 19).
OLD_REQUIRES = {
    "random": (), "l1": (), "l2": (),
    "wanda": ("input_rms",),
    "taylor": ("q_grad", "k_grad"),
    "pivoted_qr": ("q_act", "k_act"),
    "strong_rrqr": ("q_act", "k_act"),
    "pca": ("k_norm_cov",),
    "pca_qk": ("q_act", "k_act"),
}


def test_derived_requires_equal_the_old_table():
    assert REQUIRES == OLD_REQUIRES
    assert {name: m.requires for name, m in REGISTRY.items()} == OLD_REQUIRES


def test_names_and_kinds_are_unchanged():
    assert ROTATIONS == ("pca", "pca_qk")
    assert ALL_METHODS == ("l1", "l2", "pivoted_qr", "random", "strong_rrqr", "taylor", "wanda", "pca", "pca_qk")
    assert set(METHODS) == set(ALL_METHODS) - set(ROTATIONS)
    assert all(REGISTRY[r].rotation for r in ROTATIONS) and not any(REGISTRY[m].rotation for m in METHODS)


def test_every_module_of_the_package_is_discovered():
    modules = {m.fn.__module__.rsplit(".", 1)[1] for m in REGISTRY.values()}
    assert modules == set(channels.discover()) == {"magnitude", "pca", "qr", "random", "taylor", "wanda"}


def test_register_refuses_duplicates_and_unknown_fields():
    with pytest.raises(ValueError, match="'l2' is already registered"):
        register("l2")(lambda ctx, keep: None)
    with pytest.raises(ValueError, match=r"requires \['q_gradient'\] are not calibration fields"):
        register("x_unknown_field", requires=("q_gradient",))
    assert "x_unknown_field" not in REGISTRY and "l2" in METHODS


def test_config_check_reads_the_registry_without_torch():
    """lapr.config parses the @register calls (ast) so a Snakefile parse never imports torch; the
    names must be exactly the imported registry's."""
    assert cfgcheck.channel_methods() == tuple(sorted(ALL_METHODS))
    code = ("import sys, lapr.config as c; print(','.join(c.channel_methods())); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().split(",") == sorted(ALL_METHODS)


def test_config_reads_the_display_facts_the_registry_holds():
    """The figures' order / colour / marker / label come from the same ast reading (lapr.report.style
    stays torch-free); they are exactly what @register stored, and every built-in declares all four."""
    imported = {name: {k: getattr(m, k) for k in cfgcheck.DISPLAY if getattr(m, k) is not None}
                for name, m in REGISTRY.items()}
    assert cfgcheck.channel_registry() == imported
    assert all(set(facts) == set(cfgcheck.DISPLAY) for facts in imported.values())


def test_schema_lists_no_channel_method():
    """No enum of channel-method names in the schema: nothing to forget when a method is added
    (lapr/config.py checks the names against the registry instead)."""
    schema = yaml.safe_load(cfgcheck.SCHEMA.read_text())
    only_channel = set(ALL_METHODS) - {"random"}  # 'random' is also a head method (heads.methods)

    def enums(node):
        if isinstance(node, dict):
            if isinstance(node.get("enum"), list):
                yield node["enum"]
            for value in node.values():
                yield from enums(value)
        elif isinstance(node, list):
            for value in node:
                yield from enums(value)

    assert not [e for e in enums(schema) if only_channel & set(map(str, e))]
    assert "default" not in schema["properties"]["prune"]["properties"]["methods"]  # = every registered one
