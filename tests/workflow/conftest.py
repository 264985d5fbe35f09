import pytest
import yaml

from workflow_helpers import ROOT


@pytest.fixture
def config_file(tmp_path):
    """Write a modified copy of a profile config; returns its path."""
    def make(profile="tiny", edit=None):
        cfg = yaml.safe_load((ROOT / "workflow" / "config" / f"{profile}.yaml").read_text())
        if edit:
            edit(cfg)
        path = tmp_path / f"{profile}-edited.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path
    return make
