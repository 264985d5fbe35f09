"""The GPU run script's CPU smoke mode: tiny shapes, CSVs + provenance, budget and failures survived."""
import json

import pandas as pd

from lapr.bench import gpu_run, ops
from lapr.bench.tables import read_rows

TINY_OPS = {**gpu_run.DRY_OPS, "d_k": [16, 12], "T": 16, "H": 1, "d_v": 8, "repeats": 2, "max_warmup": 1}
TINY_MODEL = {**gpu_run.DRY_MODEL, "hidden_size": 32, "num_heads": 1, "d_k": [16], "prefill_len": [8],
              "prompt_len": 2, "repeats": 2, "max_warmup": 1}


def test_priority_order_runs_wanted_d_k_first():
    shapes = ops.expand_grid({"d_k": [128, 96, 64], "families": "delta_net"}, "cpu")
    ordered = gpu_run.priority_order(shapes, [128, 64, 96])
    assert [s.d_k for s in ordered] == [128, 128, 64, 64, 96, 96]
    assert [s.phase for s in ordered[:2]] == ["prefill", "decode"]


def test_dry_cpu_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_run, "DRY_OPS", TINY_OPS)
    monkeypatch.setattr(gpu_run, "DRY_MODEL", TINY_MODEL)
    real = ops.bench_shape

    def flaky(shape, *a, **k):                      # one shape fails; the run must go on
        if shape.d_k == 12 and shape.phase == "decode" and shape.family == "delta_net":
            raise RuntimeError("simulated kernel failure")
        return real(shape, *a, **k)
    monkeypatch.setattr(ops, "bench_shape", flaky)
    meta = gpu_run.main(["--out", str(tmp_path), "--device", "cpu", "--dry", "--threads", "1"])
    op = read_rows(tmp_path / "ops_cpu.csv")
    n_fam = len(ops.FAMILIES)
    assert len(op) == n_fam * 2 * 2 and set(op["device"]) == {"cpu"}
    failed = op[op["error"] != ""]
    assert len(failed) == 1 and failed["error"].iloc[0] == "RuntimeError: simulated kernel failure"
    model = read_rows(tmp_path / "model_cpu.csv")
    assert sorted(model["phase"]) == ["decode"] * n_fam + ["prefill"] * n_fam and set(model["error"]) == {""}
    assert set(model["family"]) == set(ops.FAMILIES)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov == meta and prov["errors"] == 1 and prov["rows"] == {"ops": n_fam * 4, "model": n_fam * 2}
    assert prov["settings"]["dry"] and prov["complete"] and prov["hardware"]["device"] == "cpu"
    assert {"torch", "triton", "fla-core"} <= set(prov["versions"])


def test_budget_exhausted_is_recorded_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_run, "DRY_OPS", TINY_OPS)
    monkeypatch.setattr(gpu_run, "DRY_MODEL", TINY_MODEL)
    gpu_run.main(["--out", str(tmp_path), "--device", "cpu", "--dry", "--budget-s", "0"])
    for name in ("ops_cpu.csv", "model_cpu.csv"):
        df = pd.read_csv(tmp_path / name)
        assert len(df) and df["error"].str.startswith("skipped").all()
