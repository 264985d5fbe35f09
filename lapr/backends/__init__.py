"""Backend selection: fla's Triton kernels on CUDA, lapr's pure-PyTorch stand-ins elsewhere.

fla layers and modules look their kernels up as module globals at call time, so rebinding those
names is enough to run every fla DeltaNet / Gated DeltaNet model on a CPU — forward, backward and
cached generation — without touching the model code or the checkpoints.
"""
from __future__ import annotations

import functools
import importlib

import torch

from lapr.backends import modules
from lapr.backends.delta_rule import delta_rule, delta_rule_recurrent

# (module, attribute) -> replacement. Every Triton entry point a DeltaNet/GDN forward reaches.
_REPLACEMENTS = {
    ("fla.layers.delta_net", "chunk_delta_rule"): delta_rule,
    ("fla.layers.delta_net", "fused_recurrent_delta_rule"): delta_rule,
    ("fla.layers.gated_deltanet", "chunk_gated_delta_rule"): delta_rule,
    ("fla.layers.gated_deltanet", "fused_recurrent_gated_delta_rule"): delta_rule,
    ("fla.layers.gated_deltanet", "causal_conv1d"): modules.short_conv,
    ("fla.modules.causal_conv1d.ops.ShortConvolution", "forward"): modules.short_conv_forward,
    ("fla.modules.norm.layernorm", "rms_norm"): modules.rms_norm,
    ("fla.modules.norm.fused_norm_gate", "rms_norm_gated"): modules.rms_norm_gated,
    ("fla.modules.mlp", "swiglu"): modules.swiglu,
    ("fla.modules.mlp", "swiglu_linear"): modules.swiglu_linear,
    ("fla.models.modeling_utils", "FusedCrossEntropyLoss"): modules.CrossEntropyLoss,
    ("fla.models.modeling_utils", "FusedLinearCrossEntropyLoss"): modules.LinearCrossEntropyLoss,
}
_ORIGINALS: dict = {}


def _owner(path: str):
    """Import 'pkg.module' or 'pkg.module.Class' and return the object holding the attribute."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        mod, _, cls = path.rpartition(".")
        return getattr(importlib.import_module(mod), cls)


def use_cpu_backend(enable: bool = True) -> None:
    """Swap fla's Triton pieces for the PyTorch ones (enable=False restores fla's)."""
    for (path, name), impl in _REPLACEMENTS.items():
        owner = _owner(path)
        if enable:
            _ORIGINALS.setdefault((path, name), getattr(owner, name))
            setattr(owner, name, impl)
        elif (path, name) in _ORIGINALS:
            setattr(owner, name, _ORIGINALS[(path, name)])


def cpu_backend_active() -> bool:
    owner = _owner("fla.layers.delta_net")
    return owner.chunk_delta_rule is delta_rule


@functools.cache
def auto() -> str:
    """Pick the backend once per process: 'fla' (Triton) with CUDA, 'torch' otherwise."""
    if torch.cuda.is_available():
        return "fla"
    use_cpu_backend(True)
    return "torch"


__all__ = ["auto", "use_cpu_backend", "cpu_backend_active", "delta_rule", "delta_rule_recurrent"]
