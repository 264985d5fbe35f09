"""lapr.models._fla_import: the fla families lapr adapts without importing every fla family, nothing lost.

One fresh interpreter (the shim only acts before fla's first import), checks printed as JSON. Both
tests' interpreters start together (module fixture): each spends its ~10 s (more on a busy machine)
importing torch, transformers and fla, on a core of its own.
"""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, tempfile
import torch
import lapr.models as lm
out = {"lazy": type(sys.modules["fla"]).__name__,
       "other_imported_early": "fla.layers.rwkv7" in sys.modules,
       "compile_restored": torch.compile.__module__}
spec = dict(family="gated_deltanet", hidden_size=32, num_layers=1, num_heads=2, head_k_dim=16,
            head_v_dim=16, vocab_size=64, mlp_ratio=2)
model = lm.build_model(spec, seed=0)
with tempfile.TemporaryDirectory() as d:
    model.save_pretrained(d)
    from transformers import AutoModelForCausalLM
    again = AutoModelForCausalLM.from_pretrained(d)   # stock loading, config registered by the family
    out["reloaded"] = type(again).__name__
    x = torch.tensor([[1, 2, 3, 4]])
    out["same_logits"] = bool(torch.allclose(model.eval()(x).logits, again.eval()(x).logits))
from fla.models.utils import Cache                    # submodules of the lazy packages
from fla.models import GLAConfig                      # a name only the real __init__ defines
import fla
out["gla"] = GLAConfig.__name__
out["version"] = fla.__version__
out["all"] = len(fla.__all__) > 10
print("RESULT" + json.dumps(out))
"""


DISABLED = "import sys, lapr.models; print('TYPE', type(sys.modules['fla']).__name__)"


@pytest.fixture(scope="module")
def procs():
    """Both interpreters, started at once; name -> Popen (communicate() in the test)."""
    started = {
        "lazy": subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True),
        "disabled": subprocess.Popen([sys.executable, "-c", DISABLED], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "LAPR_FLA_LAZY": "0"}),
    }
    yield started
    for p in started.values():
        if p.poll() is None:
            p.kill()
            p.communicate()


def _finish(proc):
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_lazy_fla_import_keeps_everything_reachable(procs):
    proc = _finish(procs["lazy"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out["lazy"] == "_LazyPackage"
    assert not out["other_imported_early"]        # families lapr does not adapt are not imported
    assert out["compile_restored"] == "torch"     # the deferred torch.compile was only temporary
    assert out["reloaded"] == "GatedDeltaNetForCausalLM" and out["same_logits"]
    assert out["gla"] == "GLAConfig" and out["all"]
    assert out["version"]


def test_shim_can_be_disabled(procs):
    proc = _finish(procs["disabled"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TYPE module" in proc.stdout
