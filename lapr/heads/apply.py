"""Applying a head removal to a model, and what it saves.

Removing value head h of a layer means: its state S_h is never kept, and its output (the slice
h*d_v:(h+1)*d_v of the o_proj input) is zero. Three ways, all giving the same outputs:

- `zero_heads(model, removed)`: the reference. A deep copy with the head's v_proj rows and v
  short-conv channels zeroed, and its q_proj / k_proj rows and q/k conv channels zeroed when every
  value head reading that q/k head is removed (always, unless Gated DeltaNet groups value heads).
  Then v = silu(conv(0)) = 0, the delta rule keeps S_h = 0, o_h = 0, the per-head output norm
  maps 0 to 0 (gated or not), and the head adds nothing to o_proj's output. Heads never mix
  before o_proj, so every other head computes exactly what it did.
- `mask_heads(model, removed)` ("masked"): forward pre-hooks on each o_proj that zero the removed
  heads' input slice. Exactly the reference's output (the o_proj input is identical), on the
  unmodified weights; the removed states are still computed, so the saving is *accounted*
  (from the remaining heads' state sizes), not realised at run time.
- `remove_heads(model, removed)` ("structural"): a new model whose layers have fewer heads,
  built by stock fla from a config with the new head count, so it reloads with
  AutoModelForCausalLM. fla has one head count per model, so this needs the same number of heads
  removed in every layer, at least one head left, and (Gated DeltaNet) no grouped value heads.
  Rows of q/k/v/a/b/g projections, conv channels, A_log/dt_bias entries and o_proj columns of the
  kept heads are copied bit for bit; the state really shrinks.

`plan_application(model, removed, want)` picks 'structural' when possible under want='auto'.
State accounting (`state_accounting`): bytes per sequence of the recurrent states, the sum of
d_k * d_v * element size over kept value heads (AttentionView.state_bytes; fla keeps states in
float32), against the full model's; the short-conv caches are reported separately.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable

import torch

from lapr.models import family

APPLICATIONS = ("auto", "masked", "structural")

# The attention parameters indexed by head (unit 'k': H q/k heads x d_k rows; 'v': HV value heads
# x d_v; 'h': HV entries, one per value head) and those shared by all heads are family facts:
# Family.head_params / shared_params / head_layout (lapr/models).


def _views(model):
    return family(model).attention(model)


def check_removed(model, removed: Iterable) -> dict[int, list[int]]:
    """Validate (layer, head) pairs against the model; returns layer -> sorted heads."""
    views = _views(model)
    out: dict[int, list[int]] = {v.index: [] for v in views}
    for item in removed:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise ValueError(f"removed heads must be (layer, head) pairs; got {item!r}") from None
        if layer not in out:
            raise ValueError(f"removed head {item!r}: layer {layer} not in 0..{len(views) - 1}")
        if not 0 <= head < views[layer].num_v_heads:
            raise ValueError(f"removed head {item!r}: layer {layer} has {views[layer].num_v_heads} value heads")
        if head in out[layer]:
            raise ValueError(f"removed head {item!r} listed twice")
        out[layer].append(head)
    return {k: sorted(v) for k, v in out.items()}


def state_accounting(model, removed: Iterable = (), dtype: torch.dtype = torch.float32) -> dict:
    """Recurrent-state bytes per sequence: full, after removal, saved, and the per-layer split."""
    by_layer = check_removed(model, removed)
    size = torch.empty((), dtype=dtype).element_size()
    layers, full, kept = [], 0, 0
    for v in _views(model):
        head = v.head_k_dim * v.head_v_dim * size
        assert head * v.num_v_heads == v.state_bytes(dtype)
        n_gone = len(by_layer[v.index])
        layers.append({"layer": v.index, "heads": v.num_v_heads, "removed": n_gone, "head_bytes": head,
                       "state_bytes_full": v.state_bytes(dtype),
                       "state_bytes": v.state_bytes(dtype) - n_gone * head})
        full += v.state_bytes(dtype)
        kept += v.state_bytes(dtype) - n_gone * head
    conv_full = conv_kept = 0
    for v in _views(model):
        gone = by_layer[v.index]
        for conv, unit in ((v.q_conv, "k"), (v.k_conv, "k"), (v.v_conv, "v")):
            if conv is None:
                continue
            per = conv.weight.shape[0] * conv.weight.shape[-1] * size
            conv_full += per
            if unit == "v":
                conv_kept += per - len(gone) * v.head_v_dim * conv.weight.shape[-1] * size
            else:
                dead_qk = _dead_qk_heads(v, gone)
                conv_kept += per - len(dead_qk) * v.head_k_dim * conv.weight.shape[-1] * size
    return {"state_bytes_full": full, "state_bytes": kept, "state_bytes_saved": full - kept,
            "state_saved_frac": (full - kept) / full if full else 0.0, "dtype": str(dtype).replace("torch.", ""),
            "conv_bytes_full": conv_full, "conv_bytes": conv_kept, "layers": layers}


def _dead_qk_heads(view, gone_v: list[int]) -> list[int]:
    """q/k heads all of whose value heads are removed (value head i reads q/k head i // group)."""
    group = view.num_v_heads // view.num_heads
    return [h for h in range(view.num_heads) if all(h * group + j in gone_v for j in range(group))]


def _rows(unit: str, view, heads: list[int]) -> torch.Tensor:
    d = view.head_k_dim if unit == "k" else view.head_v_dim if unit == "v" else 1
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads])


@torch.no_grad()
def zero_heads(model, removed: Iterable):
    """Reference: a deep copy with the removed heads' q/k/v rows (and conv channels) zeroed."""
    by_layer = check_removed(model, removed)
    new = copy.deepcopy(model)
    for v in _views(new):
        gone = by_layer[v.index]
        if not gone:
            continue
        for unit, modules, heads in (("v", (v.v_proj, v.v_conv), gone),
                                     ("k", (v.q_proj, v.k_proj, v.q_conv, v.k_conv), _dead_qk_heads(v, gone))):
            rows = _rows(unit, v, heads)
            for m in modules:
                if m is None or not len(rows):
                    continue
                m.weight[rows.to(m.weight.device)] = 0
                if getattr(m, "bias", None) is not None:
                    m.bias[rows.to(m.bias.device)] = 0
    return new


def mask_heads(model, removed: Iterable) -> list:
    """Register o_proj pre-hooks zeroing the removed heads' outputs; returns the hook handles."""
    by_layer = check_removed(model, removed)
    handles = []
    for v in _views(model):
        gone = by_layer[v.index]
        if not gone:
            continue
        keep = torch.ones(v.num_v_heads * v.head_v_dim)
        keep[_rows("v", v, gone)] = 0

        def hook(mod, args, keep=keep):
            x = args[0]
            return (x * keep.to(x.device, x.dtype),) + tuple(args[1:])

        handles.append(v.o_proj.register_forward_pre_hook(hook))
    return handles


@contextlib.contextmanager
def masked(model, removed: Iterable):
    """Context manager: the model with `removed` heads masked (hooks removed on exit)."""
    handles = mask_heads(model, removed)
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def structural_blocker(model, removed: Iterable) -> str | None:
    """Why `removed` cannot be applied structurally in fla (None if it can)."""
    by_layer = check_removed(model, removed)
    views = _views(model)
    counts = {len(h) for h in by_layer.values()}
    if len(counts) != 1:
        return f"removed heads per layer differ ({[len(by_layer[v.index]) for v in views]}); fla has one head count per model"
    if any(len(by_layer[v.index]) >= v.num_v_heads for v in views):
        return "a layer would keep no head"
    if any(v.num_v_heads != v.num_heads for v in views):
        return "grouped value heads (num_v_heads != num_heads)"
    fam = family(model)
    if not fam.head_params:
        return f"no structural head surgery for family {model.config.model_type!r}"
    for v in views:
        for name, p in v.module.named_parameters():
            if fam.head_layout(name) is None:
                return f"layer {v.index}: parameter {name} has no known head layout"
    return None


def plan_application(model, removed: Iterable, want: str = "auto") -> tuple[str, str | None]:
    """('structural' | 'masked', reason structural was not used)."""
    if want not in APPLICATIONS:
        raise ValueError(f"application must be one of {APPLICATIONS}; got {want!r}")
    removed = list(removed)
    why = structural_blocker(model, removed)
    if want == "structural" and why:
        raise ValueError(f"structural head removal impossible: {why}")
    if want == "masked":
        return "masked", "masked requested"
    return ("masked", why) if why else ("structural", None)


def _head_config(model, kept: int):
    return family(model).head_config(model.config, kept, _views(model)[0])


@torch.no_grad()
def remove_heads(model, removed: Iterable):
    """A new model without the removed heads (see module doc); raises if not structural-able."""
    from transformers import AutoModelForCausalLM

    removed = list(removed)
    why = structural_blocker(model, removed)
    if why:
        raise ValueError(f"structural head removal impossible: {why}")
    by_layer = check_removed(model, removed)
    views = _views(model)
    names = {id(m): n for n, m in model.named_modules()}
    state = {k: t.detach().clone() for k, t in model.state_dict().items()}
    kept_n = views[0].num_v_heads - len(by_layer[views[0].index])
    fam = family(model)
    for v in views:
        keep = [h for h in range(v.num_v_heads) if h not in by_layer[v.index]]
        prefix = names[id(v.module)]
        for name, _ in v.module.named_parameters():
            layout = fam.head_layout(name)
            if layout == "shared":
                continue
            unit, axis = layout
            key = f"{prefix}.{name}"
            rows = _rows(unit, v, keep).to(state[key].device)
            state[key] = state[key].index_select(axis, rows).contiguous()
    param = next(model.parameters())
    new = AutoModelForCausalLM.from_config(_head_config(model, kept_n), dtype=param.dtype)
    new.load_state_dict(state, strict=True)
    new.to(param.device).train(model.training)
    for v_new, v_old in zip(_views(new), views):
        if (v_new.num_v_heads, v_new.head_k_dim, v_new.head_v_dim) != (kept_n, v_old.head_k_dim, v_old.head_v_dim):
            raise RuntimeError(f"layer {v_old.index}: rebuilt with {v_new.num_v_heads} heads, d_k={v_new.head_k_dim}, "
                               f"d_v={v_new.head_v_dim}")
    return new


@contextlib.contextmanager
def applied(model, removed: Iterable, want: str = "auto"):
    """Yield (model_to_evaluate, application) with `removed` heads gone, by structure or mask."""
    removed = list(removed)
    how, _ = plan_application(model, removed, want)
    if how == "structural":
        yield remove_heads(model, removed), how
    else:
        with masked(model, removed):
            yield model, how


__all__ = ["APPLICATIONS", "applied", "check_removed", "mask_heads", "masked", "plan_application",
           "remove_heads", "state_accounting", "structural_blocker", "zero_heads"]
