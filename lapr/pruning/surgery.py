"""Channel surgery: shrink every attention layer's key dimension d_k -> d_k' in a fla model.

`prune_channels(model, keep)` returns a NEW model (the input is left untouched) built by stock
fla from the family's resized config (`Family.resized_config`: e.g. DeltaNet's expand_k, Gated
DeltaNet's head_dim with expand_v re-derived so head_v_dim and the value path are unchanged), so
`save_pretrained` + `AutoModelForCausalLM.from_pretrained` round-trips without any lapr code. Only
the rows indexed by key channel change (`Family.key_channel_modules`: q_proj / k_proj rows, the q / k
short-conv channels, and a key-wise gate's rows such as GLA's gk_proj); every other tensor is copied
bit for bit.

`keep` has one entry per attention layer (order of `family(model).attention(model)`), all with
the same d_k' (fla has one key dim per model):
- selection: LongTensor [H, d_k'] of channel indices per q/k head. The same indices are taken
  from q_proj rows, k_proj rows, and the q and k depthwise conv channels (weights and bias).
  Exact: dropping a channel commutes with the per-channel conv and its SiLU, and q, k are
  L2-normalised over the channels present, so the pruned model computes what the unpruned model
  computes with those channels zeroed before the norm (`zero_channels`), see "Scale" below.
- rotation (PCA): float Tensor [H, d_k, d_k'] with orthonormal columns U_h (from
  `channels.rotation_basis`: pca or pca_qk). q_proj rows become U_h^T W_q[h] (rotate, then keep
  the top components); same for k with the same U_h. This is LAP's absorption (paper A's code,
  src/key_reduction/pruners/pca.py, absorb_and_compress_deltanet_nonshared, with the kernel
  mix below matching its T**2 weights, l. 203).

Short-conv handling for PCA (a rotation does not commute with a depthwise conv + SiLU).
The layer computes q = l2norm(silu(conv_c(W_q x))) with one causal kernel w_c per channel c.
We rotate BEFORE the conv (so proj, conv, conv cache and state all shrink, and stock fla runs the
result) and give new channel j the kernel and bias

    w'_j = sum_c U[c, j]^2 w_c        b'_j = sum_c U[c, j] b_c

i.e. the kernel average weighted by each original channel's share of component j (sum_c U_cj^2
= 1); it is the least-squares kernel for white, equal-variance conv inputs, and the bias is the
exact rotation of the bias. This is EXACT when (i) the conv kernels within each head are equal
and the conv has no activation (DeltaNet with qk_activation='identity'), then the pruned model
equals the unpruned model with q/k projected onto span(U), `zero_channels(model, bases)`; or
(ii) U is a coordinate selection (then it is channel selection). Otherwise it is an
approximation: the SiLU and the per-channel kernels are the error. `conv_mismatch` reports,
per layer, sum_jc U_cj^2 ||w_c - w'_j||^2 / sum_jc U_cj^2 ||w_c||^2 (0 = kernels commute) so
results can be read against it; the pruning stage records it in pruning.json. The alternative
that is exact (keep the d_k-channel conv and apply U^T after it) has no place in stock fla's
layer and would not reload with AutoModelForCausalLM, so it is not offered.

Scale. fla's delta-rule kernels multiply q by d_k**-0.5 after the L2 norm; the pruned model's
kernels use d_k'**-0.5, so every attention output o = scale * S q is c = sqrt(d_k/d_k') times
the zeroed parent's (the state S does not depend on q). Each layer's output then passes through
the per-head output RMSNorm (o_norm, also the gated one), which would cancel a constant factor
but for its eps: RMSNorm(c o) = o / sqrt(ms(o) + eps / c^2). In trained models eps is NOT
negligible: o is small (median ms(o) ~ 4e-6 in a tiny GDN trained 40 steps, against the
norm_eps = 1e-6 of these configs), so the output norm does not absorb the scale change.
Measured on the embedded checkpoints (results/embedded/models/{deltanet,gdn}, d_k = 64;
figures from the issue's audit): the parent with the pruned channels zeroed, run at its own
scale d_k**-0.5, differs from the pruned model by 1.5-2 % relative logit error; run at the
pruned scale d_k'**-0.5 it differs by 1.3e-7 (float32 round-off). tests/pruning/test_scale.py
trains tiny DeltaNet / GDN models for 40 steps and finds 0.24 % / 0.96 % and ~9e-8 (d_k 32 ->
16), and round-off at both scales once norm_eps = 0 (eps is the whole effect; the other pruning
tests use norm_eps = 0 for exactness). So a channel-selection pruned model equals the zeroed
parent AT THE PRUNED SCALE (`zero_channels` + `rescaled_query`), not at the parent's; the
pruning stage measures both errors for every checkpoint it writes (`scale_check`, recorded
under "scale" in pruning.json, on a fixed 1 x 64 token batch).
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import Tensor

from lapr import backends
from lapr.models import family


# ---- keep validation ---------------------------------------------------------------------

def is_rotation(entry: Tensor) -> bool:
    return torch.is_floating_point(entry)


def check_keep(model, keep) -> int:
    """Validate `keep` against `model`; return the common d_k'."""
    views = family(model).attention(model)
    if not isinstance(keep, list | tuple) or len(keep) != len(views):
        raise ValueError(f"keep must be a list with one entry per attention layer "
                         f"({len(views)}); got {type(keep).__name__} of "
                         f"{len(keep) if hasattr(keep, '__len__') else '?'}")
    kinds = {is_rotation(entry) for entry in keep}
    if len(kinds) > 1:
        raise ValueError("keep mixes index tensors and rotation bases across layers")
    dims = set()
    for view, entry in zip(views, keep):
        heads, d_k = view.num_heads, view.head_k_dim
        if is_rotation(entry):
            if entry.dim() != 3 or tuple(entry.shape[:2]) != (heads, d_k):
                raise ValueError(f"layer {view.index}: rotation basis must be [H={heads}, "
                                 f"d_k={d_k}, d_k'], got {tuple(entry.shape)}")
            dims.add(entry.shape[2])
            gram = entry.double().mT @ entry.double()
            if not torch.allclose(gram, torch.eye(entry.shape[2], dtype=gram.dtype)
                                  .expand_as(gram), atol=1e-4):
                raise ValueError(f"layer {view.index}: rotation basis columns are not "
                                 f"orthonormal")
        else:
            if entry.dtype not in (torch.int64, torch.int32) or entry.dim() != 2 \
                    or entry.shape[0] != heads:
                raise ValueError(f"layer {view.index}: kept indices must be an integer tensor "
                                 f"[H={heads}, d_k'], got {entry.dtype} {tuple(entry.shape)}")
            dims.add(entry.shape[1])
            if entry.numel() and (entry.min() < 0 or entry.max() >= d_k):
                raise ValueError(f"layer {view.index}: kept indices must lie in [0, {d_k})")
            if (entry.sort(dim=-1).values.diff(dim=-1) == 0).any():
                raise ValueError(f"layer {view.index}: kept indices repeat within a head")
    if len(dims) != 1:
        raise ValueError(f"every layer must keep the same number of channels (fla has one key "
                         f"dim per model); got {sorted(dims)}")
    kept = dims.pop()
    if not 1 <= kept <= min(v.head_k_dim for v in views):
        raise ValueError(f"kept channels per head must be in [1, d_k]; got {kept}")
    return kept


# ---- per-tensor transforms ---------------------------------------------------------------

def _take(weight: Tensor, index: Tensor, heads: int) -> Tensor:
    """Rows [H*d_k, ...] -> [H*d_k', ...]: per head, the rows in `index` [H, d_k']."""
    grouped = weight.reshape(heads, -1, *weight.shape[1:])
    idx = index.long().to(weight.device).reshape(heads, -1, *([1] * (weight.dim() - 1)))
    return grouped.gather(1, idx.expand(-1, -1, *weight.shape[1:])).reshape(-1, *weight.shape[1:])


def _rotate(weight: Tensor, basis: Tensor, heads: int, squared: bool = False) -> Tensor:
    """Rows [H*d_k, ...] -> [H*d_k', ...]: per head U^T rows (or (U*U)^T rows)."""
    grouped = weight.reshape(heads, -1, *weight.shape[1:]).double()
    u = basis.double().to(weight.device)
    u = u * u if squared else u
    flat = grouped.reshape(heads, grouped.shape[1], -1)
    return (u.mT @ flat).reshape(-1, *weight.shape[1:]).to(weight.dtype)


def _module_names(model) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def _qk_tensors(model, view, names) -> dict[str, tuple[Tensor, bool]]:
    """state-dict key -> (tensor, mixes_by_squared_basis) for every tensor indexed by key channel
    (Family.key_channel_modules): a conv kernel and a gate's weight and bias mix by U**2 under a
    rotation, everything else (projection rows, a conv bias) rotates."""
    out = {}
    for module, kind in family(model).key_channel_modules(view):
        prefix = names[id(module)]
        out[f"{prefix}.weight"] = (module.weight, kind in ("conv", "gate"))
        if getattr(module, "bias", None) is not None:
            out[f"{prefix}.bias"] = (module.bias, kind == "gate")
    return out


# ---- config ------------------------------------------------------------------------------

def resized_config(model, kept: int):
    """The family's resized config (Family.resized_config), checked by the family so that fla
    rebuilds it exactly (e.g. Gated DeltaNet's expand_v nudged so int(head_dim * expand_v) keeps
    head_v_dim)."""
    return family(model).resized_config(model.config, kept)


# ---- public API --------------------------------------------------------------------------

def prune_channels(model, keep: list[Tensor]):
    """A new model with each layer's q/k key channels reduced to `keep` (see module doc)."""
    from transformers import AutoModelForCausalLM

    kept = check_keep(model, keep)
    fam = family(model)
    views = fam.attention(model)
    names = _module_names(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for view, entry in zip(views, keep):
        for key, (tensor, conv) in _qk_tensors(model, view, names).items():
            tensor = tensor.detach()
            if is_rotation(entry):
                state[key] = _rotate(tensor, entry, view.num_heads, squared=conv)
            else:
                state[key] = _take(tensor, entry, view.num_heads)

    config = resized_config(model, kept)
    param = next(model.parameters())
    new = AutoModelForCausalLM.from_config(config, dtype=param.dtype)
    new.load_state_dict(state, strict=True)
    new.to(param.device)
    new.train(model.training)
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    for view in fam.attention(new):
        if view.head_k_dim != kept or view.head_v_dim != views[view.index].head_v_dim:
            raise RuntimeError(f"layer {view.index}: rebuilt with d_k={view.head_k_dim}, "
                               f"d_v={view.head_v_dim}; expected {kept}, "
                               f"{views[view.index].head_v_dim}")
    return new


@torch.no_grad()
def zero_channels(model, keep: list[Tensor]):
    """A deep copy at the ORIGINAL d_k whose pruned channels are zero before the L2 norm.

    Selection: q/k proj rows and q/k conv channels (weights and bias) outside `keep` are zeroed.
    Rotation: q/k proj rows are projected onto span(U) per head, W <- U U^T W, and a conv bias
    likewise, b <- U U^T b (conv kernels unchanged: the exact reference when they are equal
    within a head and linear, see module doc). It runs at the parent's query scale d_k**-0.5;
    wrap it in `rescaled_query` to run it at the pruned model's (module doc, "Scale").
    """
    check_keep(model, keep)
    new = copy.deepcopy(model)
    _zero_(new, keep)
    return new


def _qk_modules(fam, view):
    """The q/k modules the zeroed reference zeroes (projections and convs; a key-wise gate acts on
    zero channels only, so it is left alone)."""
    return [m for m, kind in fam.key_channel_modules(view) if kind in ("linear", "conv")]


@torch.no_grad()
def _zero_(model, keep: list[Tensor]) -> None:
    """`zero_channels` in place."""
    fam = family(model)
    for view, entry in zip(fam.attention(model), keep):
        heads, d_k = view.num_heads, view.head_k_dim
        if is_rotation(entry):
            proj = entry.double() @ entry.double().mT  # [H, d_k, d_k]
            for module in (view.q_proj, view.k_proj):
                w = module.weight.reshape(heads, d_k, -1).double()
                module.weight.copy_((proj @ w).reshape(module.weight.shape))
            for module in _qk_modules(fam, view):
                if getattr(module, "bias", None) is not None:
                    b = module.bias.reshape(heads, d_k, 1).double()
                    module.bias.copy_((proj @ b).reshape(module.bias.shape))
            continue
        mask = torch.zeros(heads, d_k, dtype=torch.bool)
        mask.scatter_(1, entry.long().cpu(), True)
        mask = mask.reshape(-1)
        for module in _qk_modules(fam, view):
            module.weight[~mask.to(module.weight.device)] = 0
            if getattr(module, "bias", None) is not None:
                module.bias[~mask.to(module.bias.device)] = 0


@contextlib.contextmanager
def _zeroed(model, keep: list[Tensor]):
    """`model` itself with the pruned channels zeroed inside the block, restored bit for bit
    after it (only the q/k tensors are copied: no second full model in memory)."""
    fam = family(model)
    saved = [(t, t.detach().clone()) for view in fam.attention(model)
             for m in _qk_modules(fam, view) for t in (m.weight, getattr(m, "bias", None))
             if t is not None]
    try:
        _zero_(model, keep)
        yield model
    finally:
        with torch.no_grad():
            for tensor, value in saved:
                tensor.copy_(value)


def query_scale(d_k: int) -> float:
    """fla's delta-rule query scale for key dim d_k (the kernels' default, scale=None)."""
    return d_k ** -0.5


@contextlib.contextmanager
def rescaled_query(model, head_k_dim: int):
    """Run `model` (inside the block) as if its kernels scaled q by head_k_dim**-0.5 instead of
    its own d_k**-0.5.

    The kernel output o is linear in the scale (the state does not depend on q), so this
    multiplies o by sqrt(d_k / head_k_dim) on its way into the output norm (forward pre-hook on
    the family's output norm, Family.output_norm; on o_proj for a layer without one). Zeroed parent + rescaled_query(kept) is the
    exact reference for a channel-selection pruned model (module doc, "Scale").
    """
    handles = []

    def hook(factor):
        def pre(_, args):
            return (args[0] * factor, *args[1:])
        return pre

    try:
        for view in family(model).attention(model):
            factor = math.sqrt(view.head_k_dim / head_k_dim)
            target = family(model).output_norm(view)
            handles.append(target.register_forward_pre_hook(hook(factor)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


SCALE_TOKENS = (1, 64)   # batch x length of the scale check: a few ms for tiny models, ~1 s at 1B
SCALE_TOKEN_SEED = 0


def _rel(a: Tensor, b: Tensor) -> float:
    """||a - b||_F / ||b||_F in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def scale_check(parent, pruned, keep: list[Tensor], tokens: Tensor | None = None) -> dict:
    """Measure what the query-scale change does: relative logit error ||L_pruned - L_ref|| /
    ||L_ref|| (Frobenius, float64) of `pruned` against `parent` with the pruned channels zeroed,
    run at the parent's scale d_k**-0.5 and at the pruned scale d_k'**-0.5.

    `tokens` default: a fixed [1, 64] batch of uniform random ids (torch.Generator seed 0) in the
    vocabulary, the same for every checkpoint; short so the check costs a few forward passes of
    64 tokens even for 1B-parameter models. `parent` is zeroed in place and restored bit for bit
    (no copy). For a selection the pruned-scale error is round-off (~1e-7 in float32); for a PCA
    rotation the reference is exact only when the q/k convs commute with the rotation (module
    doc), so both errors also contain the conv approximation.
    """
    kept = check_keep(parent, keep)
    d_k = family(parent).attention(parent)[0].head_k_dim
    param = next(parent.parameters())
    if tokens is None:
        gen = torch.Generator().manual_seed(SCALE_TOKEN_SEED)
        tokens = torch.randint(0, parent.config.vocab_size, SCALE_TOKENS, generator=gen)
    modes = (parent.training, pruned.training)
    parent.eval()
    pruned.eval()
    try:
        with backends.on_device(next(pruned.parameters()).device):
            out = pruned(tokens.to(next(pruned.parameters()).device)).logits
        tokens = tokens.to(param.device)
        with _zeroed(parent, keep), backends.on_device(param.device):
            own = parent(tokens).logits
            with rescaled_query(parent, kept):
                scaled = parent(tokens).logits
    finally:
        parent.train(modes[0])
        pruned.train(modes[1])
    out = out.to(own.device)
    return {"before": query_scale(d_k), "after": query_scale(kept), "d_k_before": d_k,
            "d_k_after": kept, "output_factor": math.sqrt(d_k / kept),
            "tokens": list(tokens.shape),
            "rel_logit_error_parent_scale": _rel(out, own),
            "rel_logit_error_pruned_scale": _rel(out, scaled)}


@torch.no_grad()
def conv_mismatch(model, bases: list[Tensor]) -> list[dict]:
    """Per layer, how far the PCA conv rule is from exact (0 = kernels equal within heads).

    For q and k: sum_{h,j,c} U_cj^2 ||w_c - w'_j||^2 / sum_{h,j,c} U_cj^2 ||w_c||^2 with
    w'_j = sum_c U_cj^2 w_c; plus whether the conv applies an activation (SiLU: not exact
    either way). Layers without a short conv report None.
    """
    rows = []
    for view, basis in zip(family(model).attention(model), bases):
        row = {"layer": view.index}
        for name, conv in (("q", view.q_conv), ("k", view.k_conv)):
            if conv is None:
                row[f"{name}_conv_mismatch"] = None
                continue
            w = conv.weight.detach().double().reshape(view.num_heads, view.head_k_dim, -1)
            share = basis.double() ** 2                            # [H, d_k, d_k']
            mixed = share.mT @ w                                   # [H, d_k', K]
            diff = ((w[:, :, None, :] - mixed[:, None, :, :]) ** 2).sum(-1)  # [H, d_k, d_k']
            num = (share * diff).sum()
            den = (share * (w**2).sum(-1, keepdim=True)).sum()
            row[f"{name}_conv_mismatch"] = float(num / den) if den > 0 else 0.0
        row["conv_activation"] = None if view.q_conv is None else view.q_conv.activation
        rows.append(row)
    return rows


def state_bytes(model, dtype: torch.dtype = torch.float32) -> list[int]:
    """Recurrent-state bytes per sequence, per attention layer (fla keeps states in float32)."""
    return [view.state_bytes(dtype) for view in family(model).attention(model)]


def conv_state_bytes(model, dtype: torch.dtype = torch.float32) -> list[int]:
    """Short-conv cache bytes per sequence, per layer (q, k and v convs; kernel_size each)."""
    size = torch.empty((), dtype=dtype).element_size()
    out = []
    for view in family(model).attention(model):
        total = 0
        for conv in (view.q_conv, view.k_conv, view.v_conv):
            if conv is not None:
                total += conv.weight.shape[0] * conv.weight.shape[-1] * size
        out.append(total)
    return out


__all__ = ["check_keep", "conv_mismatch", "conv_state_bytes", "prune_channels", "query_scale",
           "rescaled_query", "resized_config", "scale_check", "state_bytes", "zero_channels"]
