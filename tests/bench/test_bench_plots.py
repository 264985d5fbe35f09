"""Bench figures: speed-up table against the ideal, one figure set per device, PNG + PDF."""
import pandas as pd
import pytest

from lapr.bench import plots


def _rows():
    rows = []
    for device in ("cuda", "cpu"):
        for fam in ("delta_net", "gated_deltanet"):
            for phase in ("prefill", "decode"):
                for d_k in (128, 96, 64, 32):
                    ms = d_k / 64 * (1.5 if d_k == 96 else 1.0)
                    rows.append(dict(level="op", family=fam, impl="fla" if device == "cuda" else "torch",
                                     device=device, device_name="X", phase=phase, B=8, H=16,
                                     T=4096 if phase == "prefill" else 1, d_k=d_k, d_v=128, ms_median=ms, ms_q25=ms * 0.9, ms_q75=ms * 1.1,
                                     tokens_per_s=8 / ms * 1e3, error=""))
    rows.append({**rows[0], "d_k": 16, "ms_median": None, "error": "RuntimeError: boom"})
    for d_k, method in ((128, "none"), (64, "wanda"), (64, "taylor")):
        for phase in ("prefill", "decode"):
            rows.append(dict(level="model", family="delta_net", impl="torch", device="cpu", device_name="X",
                             phase=phase, B=1, T=16, H=2, d_k=d_k, d_v=16, hidden_size=32, num_layers=1,
                             ms_median=d_k / 32, ms_q25=1, ms_q75=2, tokens_per_s=32 / d_k, method=method,
                             state_bytes_per_seq=2 * d_k * 16 * 4, error=""))
    return rows


@pytest.fixture
def write(tmp_path):
    """write(df) -> path of a fresh CSV holding df."""
    paths = []

    def _write(df):
        paths.append(tmp_path / f"rows{len(paths)}.csv")
        df.to_csv(paths[-1], index=False)
        return paths[-1]
    return _write


def test_speedup_table_against_ideal(write):
    df = plots.load_rows([write(pd.DataFrame(_rows()))])
    assert not (df["error"].astype(str) == "RuntimeError: boom").any()
    sp = plots.speedup_table(df)
    by = sp.set_index(["level", "device", "family", "phase", "d_k"]).sort_index().loc[("op", "cuda", "delta_net", "decode")]
    assert by.loc[64, "ideal"] == 2 and by.loc[64, "r"] == 0.5 and by.loc[64, "speedup"] == pytest.approx(2.0)
    assert by.loc[96, "speedup"] == pytest.approx(128 / 96 / 1.5) and not by.loc[96, "pow2"]
    assert by.loc[128, "speedup"] == 1 and by.loc[128, "pow2"]
    model = sp[sp["level"] == "model"]
    assert len(model) == 4                                 # two methods at d_k 64 pooled into one point
    assert model.set_index(["phase", "d_k"]).loc[("decode", 64), "speedup"] == pytest.approx(2.0)


def test_make_figures_png_and_pdf(tmp_path, write):
    rows = pd.DataFrame(_rows())
    paths = plots.make_figures([write(rows[rows["device"] == "cpu"])], tmp_path / "fig")
    assert sorted(p.name for p in paths) == sorted(f"bench_{kind}_cpu.{fmt}" for fmt in ("png", "pdf")
                                                   for kind in ("ops", "speedup", "model"))
    for p in paths:
        assert p.stat().st_size > 1000
    from PIL import Image

    dpi = Image.open(tmp_path / "fig" / "bench_speedup_cpu.png").info["dpi"]
    assert round(dpi[0]) == 200


def test_one_figure_set_per_device(tmp_path, write, monkeypatch):
    """GPU and CPU rows never share a figure: each device gets its own files (rendering skipped)."""
    drawn = []

    def fake_save(fig, fig_dir, name):
        drawn.append((name, fig.get_suptitle()))
        return [fig_dir / f"{name}.png"]
    monkeypatch.setattr(plots, "_save", fake_save)
    rows = pd.DataFrame(_rows())
    plots.make_figures([write(rows[rows["device"] == "cuda"]), write(rows[rows["device"] == "cpu"])], tmp_path)
    names = sorted(name for name, _ in drawn)
    assert names == sorted(["bench_ops_cuda", "bench_speedup_cuda", "bench_ops_cpu", "bench_speedup_cpu",
                            "bench_model_cpu"])
    for name, suptitle in drawn:
        assert suptitle.split("—")[-1].strip().lower().startswith(name.rsplit("_", 1)[-1])


def test_make_figures_needs_rows(tmp_path, write):
    bad = pd.DataFrame([{**_rows()[0], "ms_median": None, "error": "x"}])
    with pytest.raises(ValueError):
        plots.make_figures([write(bad)], tmp_path)
    with pytest.raises(ValueError):
        plots.make_figures([], tmp_path)
