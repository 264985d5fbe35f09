"""Issue 19's proof: a new channel method is ONE module in lapr/pruning/channels, nothing else.

A copy of the `lapr` package (and the workflow schema, which lapr/config.py reads) gets one new file,
lapr/pruning/channels/dummy_first.py; a fresh interpreter importing the copy must then find the method
in the registry, select with it through the public API, prune a tiny model with the result, draw it
in the colour, marker, name and place in the display order its @register declares, and accept it in a
workflow config. A second new module, dummy_plain.py, declares no look: it comes last, in a fallback
colour."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DUMMY = '''\
"""dummy_first: keep the first `keep` channels of every head (weights only, no calibration)."""
import torch

from lapr.pruning.channels import ChannelContext, register


@register("dummy_first", requires=(), order=15, color="#123456", marker="p", label="Dummy first")
def select_first(ctx: ChannelContext, keep: int) -> torch.Tensor:
    return torch.arange(keep).expand(ctx.heads, keep).clone()
'''

PLAIN = '''\
"""dummy_plain: keep the last `keep` channels of every head; no display facts."""
import torch

from lapr.pruning.channels import ChannelContext, register


@register("dummy_plain")
def select_last(ctx: ChannelContext, keep: int) -> torch.Tensor:
    return torch.arange(ctx.d_k - keep, ctx.d_k).expand(ctx.heads, keep).clone()
'''

CHECK = '''
import copy, os, sys
from pathlib import Path

import torch
import yaml

import lapr
assert Path(lapr.__file__).is_relative_to(os.environ["COPY"]), lapr.__file__  # the copy, not the repo

from lapr.pruning.channels import ALL_METHODS, METHODS, REQUIRES
from lapr.pruning.ratio import check_method
from lapr.pruning.select import choose, needs_calib
assert "dummy_first" in METHODS and "dummy_first" in ALL_METHODS, ALL_METHODS
assert REQUIRES["dummy_first"] == () and not needs_calib("dummy_first") and check_method("dummy_first")

# selection on a tiny model, then the surgery with the selected channels
from lapr.models import build_model
from lapr.pruning.surgery import prune_channels
torch.manual_seed(0)
model = build_model(dict(family="delta_net", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=12,
                         head_v_dim=16, vocab_size=128, mlp_ratio=2), seed=0).float().eval()
keep = choose(model, "dummy_first", kept=5)  # no calib: it declared requires=()
assert len(keep) == 2, keep
for k in keep:
    assert torch.equal(k, torch.tensor([[0, 1, 2, 3, 4]] * 2)), k
pruned = prune_channels(model, keep)
with torch.no_grad():
    logits = pruned(torch.arange(8)[None]).logits
assert logits.shape == (1, 8, 128) and torch.isfinite(logits).all()

# report style: the declared look and place (order 15: between random and l1), in tables too; the
# undeclared one last, in a fallback colour under its own name
from lapr.report import style, tables
assert style.CHANNEL_METHODS[:3] == ("random", "dummy_first", "l1"), style.CHANNEL_METHODS
assert style.CHANNEL_METHODS[-1] == "dummy_plain", style.CHANNEL_METHODS
assert tables.METHOD_ORDER == style.METHOD_ORDER == ("none",) + style.CHANNEL_METHODS
assert style.channel_methods() == style.CHANNEL_METHODS, style.channel_methods()
assert (style.color("dummy_first"), style.marker("dummy_first"), style.label("dummy_first")) == (
    "#123456", "p", "Dummy first")
assert style.label("dummy_first+lora") == "Dummy first + LoRA"
plain = style.method_style("dummy_plain")
assert not plain.known and plain.color in style.FALLBACK_PALETTE and plain.label == "dummy_plain"

# workflow config: accepted as a prune method, and in the default (every registered method)
from lapr import config as cfgcheck
assert "dummy_first" in cfgcheck.channel_methods()
cfg = yaml.safe_load(Path(os.environ["TINY"]).read_text())
cfg["prune"]["methods"] = ["wanda", "strong_rrqr", "dummy_first"]
cfgcheck.check(cfg)
cfgcheck.check_values(cfg)
del cfg["prune"]["methods"]
cfgcheck.check_values(cfg)
assert cfg["prune"]["methods"] == list(style.CHANNEL_METHODS), cfg["prune"]["methods"]
cfg["prune"]["methods"] = ["dummy_second"]
try:
    cfgcheck.check(cfg)
except cfgcheck.ConfigError as e:
    assert "unknown channel method 'dummy_second'" in str(e) and "dummy_first" in str(e), e
else:
    raise AssertionError("dummy_second accepted")
print("OK")
'''


def test_one_module_adds_a_channel_method(tmp_path):
    shutil.copytree(ROOT / "lapr", tmp_path / "lapr", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    shutil.copy(ROOT / "workflow/schemas/config.schema.yaml", tmp_path / "workflow/schemas")
    (tmp_path / "lapr/pruning/channels/dummy_first.py").write_text(DUMMY)
    (tmp_path / "lapr/pruning/channels/dummy_plain.py").write_text(PLAIN)

    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(tmp_path), COPY=str(tmp_path), TINY=str(ROOT / "workflow/config/tiny.yaml"),
               OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(CHECK)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "OK", res.stdout


def test_the_repo_itself_has_no_dummy_method():
    """The copy above is the only place the dummies exist."""
    from lapr.pruning.channels import ALL_METHODS
    for name in ("dummy_first", "dummy_plain"):
        assert name not in ALL_METHODS
        assert not (ROOT / f"lapr/pruning/channels/{name}.py").exists()
