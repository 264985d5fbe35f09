"""lapr.backends.equivalence, the driver of the recorded GPU comparison (results/backend/equivalence.json):
its CPU mode checks lapr's delta rule against its own float64 reference, writes a valid document, and
reports a wrong implementation as a failure (on CUDA it adds fla's kernels to the same rows)."""
import json
import subprocess
import sys

import torch

from lapr.backends import equivalence as eq


def test_cpu_smoke_run_writes_a_valid_passing_document(tmp_path):
    out = tmp_path / "equivalence.json"
    proc = subprocess.run([sys.executable, "-m", "lapr.backends.equivalence", "--out", str(out), "--device", "cpu",
                           "--quick", "--cases", "ops-gdn-k48-v96-gva"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert eq.validate(doc) == []
    assert doc["mode"].startswith("cpu") and set(doc["cases"]) == {"ops-gdn-k48-v96-gva"}
    assert doc["summary"]["failed"] == 0 and doc["summary"]["passed"] >= 10
    assert {r["impl"] for r in doc["rows"]} >= {"lapr_delta_rule", "lapr_delta_rule_recurrent"}


def test_a_wrong_implementation_fails_its_rows(monkeypatch):
    real = eq._impl_fn

    def off_by_a_bit(impl, family):
        fn = real(impl, family)
        if impl != "lapr_delta_rule":
            return fn

        def wrong(**kw):
            o, state = fn(**kw)
            return o * 1.1, state  # 10 % off: far beyond bf16's 1e-2 tolerance
        return wrong

    monkeypatch.setattr(eq, "_impl_fn", off_by_a_bit)
    rows, _, meta = eq.run_cases(["ops-deltanet-k64-v64"], device="cpu", seed=0, quick=True)
    assert meta["ops-deltanet-k64-v64"]["status"] == "done"
    bad = [r for r in rows if r["impl"] == "lapr_delta_rule" and r["tensor"] == "o" and r["tol"] is not None]
    assert bad and not any(r["passed"] for r in bad)
    good = [r for r in rows if r["impl"] == "lapr_delta_rule_recurrent" and r["tensor"] == "o" and r["ref"] == "ref_f64"]
    assert good and all(r["passed"] for r in good)
    assert torch.isfinite(torch.tensor([r["value"] for r in bad])).all()
