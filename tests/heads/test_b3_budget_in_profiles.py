"""Every shipped profile prunes heads at paper B's 38.9% (B3): heads.budgets holds heads.b3_budget."""
from pathlib import Path

import pytest
import yaml

from lapr.grid import ratio_name
from lapr.heads.stage import Heads

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "workflow/config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_b3_budget_is_a_budget(path):
    heads = yaml.safe_load(path.read_text()).get("heads", {})
    b3 = heads.get("b3_budget", Heads().b3_budget)
    assert ratio_name(b3) == "0.389"
    assert ratio_name(b3) in {ratio_name(b) for b in heads.get("budgets", [])}, path.name
