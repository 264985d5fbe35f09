"""head_table (heads.csv from a model) agrees with the profiling capture + rank metrics."""
import numpy as np
import torch

from lapr.heads.table import head_table
from lapr.profiling import metrics
from lapr.profiling.capture import capture_states

from heads_helpers import tiny_model


def test_head_table_matches_profiling(family_name):
    model = tiny_model(family_name, heads=2)
    ids = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(1))
    table = head_table(model, ids, batch_size=2)
    assert list(table.columns) == ["layer", "head", "final_rank", "bound", "state_norm", "class", "state_nuclear"]
    assert len(table) == 4 and (table["bound"] == 8).all()
    states = capture_states(model, ids, [24])
    for layer, s in states.items():                   # [B, HV, 1, d_k, d_v]
        sv = metrics.singular_values(s[:, :, 0])
        rank = metrics.threshold_rank(sv).double().mean(0).numpy()
        norm = metrics.state_norm(sv).double().mean(0).numpy()
        got = table[table["layer"] == layer].sort_values("head")
        np.testing.assert_allclose(got["final_rank"], rank)
        np.testing.assert_allclose(got["state_norm"], norm, rtol=1e-5)
    assert set(table["class"]) <= {"low", "high"}
    assert ((table["final_rank"] >= 4) == (table["class"] == "high")).all()
