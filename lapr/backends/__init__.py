"""Backend selection: fla's Triton kernels on CUDA, lapr's pure-PyTorch stand-ins elsewhere.

fla layers and modules look their kernels up as module globals at call time, so rebinding those
names is enough to run every fla DeltaNet / Gated DeltaNet model on a CPU — forward, backward and
cached generation — without touching the model code or the checkpoints.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager

import torch

from lapr.backends import modules
from lapr.backends.delta_rule import delta_rule, delta_rule_recurrent, states_in_chunks

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


def owner(path: str):
    """Import 'pkg.module' or 'pkg.module.Class' and return the object holding the attribute."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        mod, _, cls = path.rpartition(".")
        return getattr(importlib.import_module(mod), cls)


# The gated delta rule alone: what GDN training needs on Hopper with Triton 3.4-3.7.0, where fla
# refuses the chunk backward (fla issue #640). Forward-only work keeps fla's kernel.
GATED_DELTA_RULE = [("fla.layers.gated_deltanet", "chunk_gated_delta_rule"),
                    ("fla.layers.gated_deltanet", "fused_recurrent_gated_delta_rule")]


# The delta-rule entry points alone (chunk and fused-recurrent, both families): the attention math.
DELTA_RULE_OPS = [key for key, impl in _REPLACEMENTS.items() if impl is delta_rule]


@contextmanager
def swapped(impl, entries: list[tuple[str, str]]):
    """Within the block the (module, name) `entries` of fla are `impl`; whatever was there (fla's
    kernel or lapr's stand-in) is restored afterwards."""
    saved = {(path, name): getattr(owner(path), name) for path, name in entries}
    try:
        for path, name in entries:
            setattr(owner(path), name, impl)
        yield
    finally:
        for (path, name), previous in saved.items():
            setattr(owner(path), name, previous)


def use_cpu_backend(enable: bool = True, only: list[tuple[str, str]] | None = None) -> None:
    """Swap fla's Triton pieces for the PyTorch ones (enable=False restores fla's); `only` limits
    the swap to some (module, name) entries of _REPLACEMENTS."""
    for (path, name), impl in _REPLACEMENTS.items():
        if only is not None and (path, name) not in only:
            continue
        holder = owner(path)
        if enable:
            _ORIGINALS.setdefault((path, name), getattr(holder, name))
            setattr(holder, name, impl)
        elif (path, name) in _ORIGINALS:
            setattr(holder, name, _ORIGINALS[(path, name)])


def cpu_backend_active() -> bool:
    return owner("fla.layers.delta_net").chunk_delta_rule is delta_rule


def auto() -> str:
    """Pick the backend: 'fla' (Triton) with CUDA, else install the 'torch' one (idempotent)."""
    if torch.cuda.is_available():
        return "fla"
    if not cpu_backend_active():
        use_cpu_backend(True)
    return "torch"


def fla_gated_backward_broken() -> bool:
    """True where fla 0.6 refuses GDN's chunk backward: Hopper GPUs with 3.4 <= Triton < 3.7.1."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9:
        return False
    import triton

    version = tuple(int(x) for x in triton.__version__.split(".")[:3] if x.isdigit())
    return (3, 4, 0) <= version < (3, 7, 1)


def for_training(model) -> str:
    """Backend for a run that needs gradients: fla's kernels, except the gated delta rule where
    fla's backward is refused (then lapr's chunked PyTorch op, checked against fla on the H100)."""
    if auto() == "fla" and getattr(model.config, "model_type", "") == "gated_deltanet" \
            and fla_gated_backward_broken():
        use_cpu_backend(True, only=GATED_DELTA_RULE)
        return "fla+lapr_gated_delta_rule"
    return auto()


__all__ = ["owner", "states_in_chunks", "DELTA_RULE_OPS", "swapped", "for_training", "fla_gated_backward_broken", "GATED_DELTA_RULE", "auto", "use_cpu_backend", "cpu_backend_active", "delta_rule", "delta_rule_recurrent"]
