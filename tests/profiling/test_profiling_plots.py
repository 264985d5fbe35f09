"""Figures from a synthetic profile directory (no model needed)."""
import numpy as np
import pandas as pd
import pytest

from lapr.profiling.plots import make_figures


def synthetic_profile(path, n_layers=3, n_heads=4, d=16):
    """Ranks of two head groups: low (rank <= 2) and high (rank = bound), two contexts, two samples."""
    rows = []
    positions = [1, 2, 4, 8, 16, 32, 64]
    for context in ("gutenberg", "attack"):
        for sample in range(2):
            for layer in range(n_layers):
                for head in range(n_heads):
                    for t in positions:
                        bound = min(t, d)
                        rank = bound if head % 2 else min(t, 2)
                        rows.append(dict(context=context, sample=sample, layer=layer, head=head, position=t,
                                         threshold_rank=rank, stable_rank=rank / 2, utilisation=rank / 2 / d,
                                         entropy_rank=rank * 0.8, frobenius=1.0, spectral=0.5, bound=bound))
    ranks = pd.DataFrame(rows)
    path.mkdir(parents=True, exist_ok=True)
    ranks.to_parquet(path / "ranks.parquet", index=False)
    last = ranks[ranks["position"] == 64].groupby(["layer", "head"]).agg(
        final_rank=("threshold_rank", "mean"), bound=("bound", "first"), state_norm=("frobenius", "mean"))
    last = last.reset_index()
    last["class"] = np.where(last["final_rank"] >= 8, "high", "low")
    last.to_csv(path / "heads.csv", index=False)
    pd.DataFrame({"context_a": ["gutenberg"], "context_b": ["attack"], "n_heads": [12], "spearman": [np.nan],
                  "spearman_p": [np.nan], "constant": [True], "keep_fraction": [1.0]}).to_csv(
        path / "consistency.csv", index=False)
    return path


def test_make_figures(tmp_path):
    profile = synthetic_profile(tmp_path / "profile")
    paths = make_figures(profile, tmp_path / "fig")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{stem}.{ext}" for stem in ("rank_vs_t", "rank_heatmap", "consistency", "stratification")
                           for ext in ("png", "pdf"))
    for p in paths:
        head = p.read_bytes()[:8]
        assert p.stat().st_size > 5000
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    from PIL import Image
    with Image.open(tmp_path / "fig" / "rank_vs_t.png") as im:  # 7 in wide at 200 dpi
        assert abs(im.size[0] - 1400) <= 2
    assert not list((tmp_path / "fig").glob("*.tmp"))


def test_layer_choice_and_missing_inputs(tmp_path):
    profile = synthetic_profile(tmp_path / "profile")
    with pytest.raises(ValueError, match="layer 9"):
        make_figures(profile, tmp_path / "fig9", layer=9)
    (profile / "heads.csv").unlink()
    (profile / "consistency.csv").unlink()
    assert [p.stem for p in make_figures(profile, tmp_path / "fig1")] == ["rank_vs_t", "rank_vs_t"]
    with pytest.raises(FileNotFoundError, match="ranks.parquet"):
        make_figures(tmp_path / "empty", tmp_path / "fig2")
