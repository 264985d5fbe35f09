"""The stages' typed settings models (lapr.settings.Settings): valid settings resolve exactly as the
hand-validated code did, and the workflow's JSON schema accepts and refuses what the models do."""
import json
from pathlib import Path

import pytest

import resolved_settings

RECORDED = json.loads((Path(__file__).with_name("resolved_settings.json")).read_text())


@pytest.fixture(scope="module")
def resolved():
    return resolved_settings.table()


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_valid_settings_resolve_as_before(resolved, case):
    """The shipped profiles' sections (and no settings) give every stage the settings it ran with
    before the models (tests/resolved_settings.json, recorded from the hand-validated code)."""
    assert resolved[case] == RECORDED[case]
