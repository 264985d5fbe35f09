"""Backend selection: fla's Triton kernels on CUDA, lapr's pure-PyTorch stand-ins elsewhere.

fla layers and modules look their kernels up as module globals at call time, so rebinding those
names is enough to run every fla model of a family lapr adapts on a CPU — forward, backward and
cached generation — without touching the model code or the checkpoints. The shared modules (norms,
short conv, MLP, loss) are listed here; each family's attention-kernel entry points come from its
adapter (`Family.cpu_ops` in lapr/models).
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager

import torch

from lapr.backends import dqkwg_tiled, modules
from lapr.backends.delta_rule import delta_rule, delta_rule_recurrent, states_in_chunks
from lapr.backends.dqkwg import chunk_bwd_dqkwg as lapr_chunk_bwd_dqkwg

# (module, attribute) -> replacement: the Triton entry points of fla's shared modules that the
# families' forwards reach; the attention kernels are the families' (replacements()).
_SHARED = {
    ("fla.modules.causal_conv1d.ops.ShortConvolution", "forward"): modules.short_conv_forward,
    ("fla.modules.norm.layernorm", "rms_norm"): modules.rms_norm,
    ("fla.modules.norm.fused_norm_gate", "rms_norm_gated"): modules.rms_norm_gated,
    ("fla.modules.mlp", "swiglu"): modules.swiglu,
    ("fla.modules.mlp", "swiglu_linear"): modules.swiglu_linear,
    ("fla.models.modeling_utils", "FusedCrossEntropyLoss"): modules.CrossEntropyLoss,
    ("fla.models.modeling_utils", "FusedLinearCrossEntropyLoss"): modules.LinearCrossEntropyLoss,
}
_ORIGINALS: dict = {}


def family_ops() -> dict:
    """{(module, name): lapr op} of every family's attention-kernel entry points (Family.cpu_ops)."""
    from lapr.models import FAMILIES  # lapr.models imports this package: look the families up late

    return {key: impl for fam in FAMILIES.values() for key, impl in fam.cpu_ops().items()}


def replacements() -> dict:
    """Every Triton entry point a forward of an adapted family reaches -> its PyTorch stand-in."""
    return {**family_ops(), **_SHARED}


def owner(path: str):
    """Import 'pkg.module' or 'pkg.module.Class' and return the object holding the attribute."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        mod, _, cls = path.rpartition(".")
        return getattr(importlib.import_module(mod), cls)


def attention_ops(fam) -> list[tuple[str, str]]:
    """A family's attention-kernel entry points (those of its cpu_ops whose stand-in is its state op):
    what the gated-backward fallback swaps and what profiling wraps to read states."""
    op = fam.state_op()
    return [key for key, impl in fam.cpu_ops().items() if impl is op]


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
    the swap to some (module, name) entries of replacements()."""
    for (path, name), impl in replacements().items():
        if only is None or (path, name) in only:
            _rebind(owner(path), path, name, impl, enable)


def _rebind(holder, path: str, name: str, impl, enable: bool) -> None:
    """Bind `holder.name` to `impl`, remembering fla's original the first time (enable=False puts
    the original back, if it was ever replaced)."""
    if enable:
        _ORIGINALS.setdefault((path, name), getattr(holder, name))
        setattr(holder, name, impl)
    elif (path, name) in _ORIGINALS:
        setattr(holder, name, _ORIGINALS[(path, name)])


def cpu_backend_active() -> bool:
    """Whether lapr's stand-ins are installed (judged by the first family's first kernel entry point)."""
    (path, name), impl = next(iter(family_ops().items()))
    return getattr(owner(path), name) is impl


@contextmanager
def on_device(device):
    """Within the block a forward on `device` runs: fla's Triton kernels cannot read CPU tensors, so on
    a machine with CUDA a CPU forward (the prune stage checks its surgery on CPU copies) runs under the
    PyTorch backend, and fla's kernels are back afterwards. Anywhere else nothing changes."""
    if torch.device(device).type != "cpu" or cpu_backend_active():
        yield
        return
    use_cpu_backend(True)
    try:
        yield
    finally:
        use_cpu_backend(False)


def auto() -> str:
    """Pick the backend: 'fla' (Triton) with CUDA, else install the 'torch' one (idempotent)."""
    if torch.cuda.is_available():
        return "fla"
    if not cpu_backend_active():
        use_cpu_backend(True)
    return "torch"


# Every fla module that binds `chunk_bwd_dqkwg` as a global (`from fla.ops.common.chunk_o import
# chunk_bwd_dqkwg`, looked up at call time); tests/backends/test_dqkwg.py greps fla's sources so
# a new caller cannot be missed. The name bound there is fla's @dispatch('common') wrapper (backend
# choice, then the Triton launcher that raises), so rebinding it replaces the whole call.
DQKWG_MODULES = ["fla.ops.common.chunk_o", "fla.ops.gated_delta_rule.chunk", "fla.ops.delta_rule.chunk",
                 "fla.ops.simple_gla.chunk", "fla.ops.comba.chunk", "fla.ops.precond_gated_delta_rule.chunk"]
DQKWG = [(path, "chunk_bwd_dqkwg") for path in DQKWG_MODULES]


def _fla_backend_takes_dqkwg() -> bool:
    """Whether fla's dispatcher hands the gated chunk_bwd_dqkwg to its TileLang kernel (fla's own
    #640 workaround, if tilelang and nvcc are installed) before its Triton path would refuse it."""
    try:
        fla_backends = importlib.import_module("fla.backends")
        from fla.ops.common.backends.tilelang import CommonTileLangBackend
    except Exception:  # noqa: BLE001 - no such fla backend: fla's Triton path is all there is
        return False
    if getattr(fla_backends, "_DISPATCH_DISABLED", False):
        return False
    backend = CommonTileLangBackend()
    return bool(backend.is_available() and backend.is_enabled())


def fla_gated_backward_broken() -> bool:
    """True where fla refuses the gated `chunk_bwd_dqkwg` (fla issue #640). fla's own condition,
    read from the very flags fla.ops.common.chunk_o tests (Hopper GPU and 3.4 <= Triton < 3.7.1),
    so the two cannot drift; False where fla's TileLang backend takes the call instead."""
    try:
        chunk_o = importlib.import_module(DQKWG_MODULES[0])
    except Exception:  # noqa: BLE001 - fla without Triton kernels: nothing to refuse
        return False
    refused = chunk_o.IS_NVIDIA_HOPPER and chunk_o.TRITON_ABOVE_3_4_0 and not chunk_o.TRITON_ABOVE_3_7_1
    return bool(refused) and not _fla_backend_takes_dqkwg()


def dqkwg_routed(q, k, v, do, h, dh, w=None, g=None, g_gamma=None, dv=None, scale=None,
                 state_v_first=False, cu_seqlens=None, chunk_size=64, chunk_indices=None):
    """What the patched name calls. Gated calls (the ones fla refuses): fla's own kernel at tile
    widths Hopper compiles correctly (lapr.backends.dqkwg_tiled) where a one-off check against
    lapr's PyTorch transcription passed on this device and shape, else that PyTorch transcription.
    Everything else (DeltaNet's ungated call, g_gamma): fla's own dispatcher and kernel."""
    if g is None:
        impl = _ORIGINALS[DQKWG[0]]
    elif dqkwg_tiled.verified(k.shape[-1], v.shape[-1], k.dtype, k.device):
        impl = dqkwg_tiled.chunk_bwd_dqkwg_tiled
    else:
        impl = lapr_chunk_bwd_dqkwg
    return impl(q, k, v, do, h, dh, w=w, g=g, g_gamma=g_gamma, dv=dv, scale=scale,
                state_v_first=state_v_first, cu_seqlens=cu_seqlens, chunk_size=chunk_size,
                chunk_indices=chunk_indices)


def use_lapr_dqkwg(enable: bool = True) -> None:
    """Rebind `chunk_bwd_dqkwg` in every fla module of DQKWG_MODULES to `dqkwg_routed` (enable=False
    restores fla's). Idempotent."""
    for path, name in DQKWG:
        try:
            holder = owner(path)
        except ModuleNotFoundError:  # an fla without that op family
            continue
        _rebind(holder, path, name, dqkwg_routed, enable)


def lapr_dqkwg_active() -> bool:
    return owner("fla.ops.gated_delta_rule.chunk").chunk_bwd_dqkwg is dqkwg_routed


def for_training(model) -> str:
    """Backend for a run that needs gradients: fla's kernels. Where fla refuses the gated
    chunk_bwd_dqkwg (Hopper, Triton 3.4-3.7.0: fla #640), a Gated DeltaNet keeps fla's op and only
    that backward call is routed through lapr ("fla+lapr_dqkwg": fla's kernel at checked tile widths,
    else lapr's PyTorch transcription; see dqkwg_routed); LAPR_GDN_TRAINING=lapr_op
    swaps the whole gated op for lapr's chunked delta rule instead (the old, 3.7x slower path)."""
    from lapr.models import family

    backend = auto()
    if backend != "fla" or not family(model).gated_backward_quirk or not fla_gated_backward_broken():
        return backend
    if os.environ.get("LAPR_GDN_TRAINING", "") == "lapr_op":
        use_cpu_backend(True, only=attention_ops(family(model)))
        return "fla+lapr_gated_delta_rule"
    use_lapr_dqkwg(True)
    return "fla+lapr_dqkwg"


__all__ = ["owner", "states_in_chunks", "attention_ops", "family_ops", "replacements", "swapped", "for_training", "fla_gated_backward_broken", "use_lapr_dqkwg", "lapr_dqkwg_active", "dqkwg_routed", "lapr_chunk_bwd_dqkwg", "DQKWG", "DQKWG_MODULES", "auto", "use_cpu_backend", "cpu_backend_active", "delta_rule", "delta_rule_recurrent"]
