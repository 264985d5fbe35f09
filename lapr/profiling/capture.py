"""Capture the recurrent states S_t of every linear-attention layer at chosen token counts t.

Method "single_pass" (default): one forward of the backbone in which each layer's attention op is
lapr's chunked delta rule (`lapr.backends.delta_rule`) asked for the states after the wanted
tokens (`states_at`): the op gets exactly the q, k, v, beta and gates the layer computes (GDN's
decay gate and beta included), so the states are the model's own, and the cost is one forward plus
the state read-outs. On a GPU this avoids the per-segment kernel launches of the method below
(measured on an H100 for a 106M DeltaNet at T = 2048 with 32 positions: segments = 27x a forward).

Method "segments": segment-wise prefill. The model runs on consecutive segments [p_{i-1}, p_i) of the input
with fla's cache (`use_cache=True, past_key_values=cache`); after each segment every layer's cache
entry holds the state after p_i tokens, read through `family(model).state_from_cache`. Each
segment is one ordinary (chunked) forward of the backbone, so the cost is about one forward pass
plus a fixed per-segment overhead (kernel launches on the GPU), with no per-token Python loop.
The states are exactly what the model computes (the short-conv caches carry over between
segments, and GDN's decay gate and beta are applied by the model's own layer code).

    positions = log_positions(T=2048, n=32)          # 1-based token counts, last = T
    states = capture_states(model, input_ids, positions)
    states[layer]  # [B, HV, P, d_k, d_v] float32; layer = index in family(model).attention(model)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lapr import backends
from lapr.models import family


def log_positions(T: int, n: int) -> list[int]:
    """At least `n` unique, roughly log-spaced token counts in [1, T], ascending, ending at T.

    Rounding geomspace(1, T, k) to integers merges neighbours at small t, so k grows from n until
    n unique counts remain (always possible when n <= T). Position 1 is always included.
    """
    T, n = int(T), int(n)
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > T:
        raise ValueError(f"cannot pick {n} distinct token counts in [1, {T}]: need n <= T")
    if n == 1:
        return [T]
    k = n
    while True:
        pos = np.unique(np.round(np.geomspace(1, T, k)).astype(np.int64))
        if len(pos) >= n:
            return [int(p) for p in pos]
        k += max(1, n - len(pos))


def check_positions(positions: Sequence[int], T: int) -> list[int]:
    """Validate 1-based token counts against a sequence of length T; returns them as ints."""
    pos = [int(p) for p in positions]
    if any(int(p) != p for p in positions):
        raise ValueError(f"positions must be integers, got {list(positions)}")
    if not pos:
        raise ValueError("positions is empty")
    if pos[0] < 1:
        raise ValueError(f"positions are 1-based token counts (S_t after t tokens): got {pos[0]} < 1")
    if any(b <= a for a, b in zip(pos, pos[1:])):
        raise ValueError(f"positions must be strictly increasing, got {pos}")
    if pos[-1] > T:
        raise ValueError(f"position {pos[-1]} is beyond the input length T={T}")
    return pos


def _backbone(model):
    """The model without its LM head (states do not need logits); the model itself if it has none."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, torch.nn.Module) else model


def _states_op(want: list[int], sink: list):
    """An fla delta-rule op that runs lapr's chunked op and appends the states after the 0-based
    token indices `want` ([B, HV, P, d_k, d_v] float32) to `sink`, in call order (= layer order)."""
    def op(*args, **kwargs):
        o, final, states = backends.delta_rule(*args, **kwargs, states_at=want)
        sink.append(states)
        return o, final
    return op


@torch.no_grad()
def capture_states(model, input_ids: torch.Tensor, positions: Sequence[int], out_device=None,
                   progress: bool = False, method: str = "single_pass") -> dict[int, torch.Tensor]:
    """States of every attention layer after `positions` tokens of `input_ids`.

    model: an fla DeltaNet / Gated DeltaNet causal LM (any family with a lapr adapter), in eval mode.
    input_ids: LongTensor [B, T]; positions: strictly increasing 1-based token counts <= T.
    Returns {layer: float32 Tensor [B, HV, P, d_k, d_v]}, layer = the attention layer's index in
    `family(model).attention(model)` (order of the model's modules), P = len(positions), on
    `out_device` (default: the model's device). method: "single_pass" or "segments" (module doc).
    """
    if method not in ("single_pass", "segments"):
        raise ValueError(f"unknown capture method {method!r}: 'single_pass' or 'segments'")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
    pos = check_positions(positions, input_ids.shape[1])
    fam = family(model)
    views = fam.attention(model)
    if not views:
        raise ValueError("model has no attention layers the lapr adapter recognises")
    if next(model.parameters()).device.type == "cpu":
        backends.auto()  # fla's Triton kernels cannot run on CPU tensors
    device = next(model.parameters()).device
    out_device = torch.device(out_device) if out_device is not None else device
    input_ids = input_ids.to(device)

    backbone = _backbone(model)
    was_training = model.training
    model.eval()
    if method == "single_pass":
        sink: list[torch.Tensor] = []
        try:
            with backends.swapped(_states_op([p - 1 for p in pos], sink), backends.DELTA_RULE_OPS):
                backbone(input_ids=input_ids, use_cache=False)
        finally:
            model.train(was_training)
        if len(sink) != len(views):
            raise RuntimeError(f"{len(sink)} attention op calls for {len(views)} attention layers: the "
                               f"model calls its delta-rule op through a path lapr does not patch")
        return {v.index: s.to(out_device, torch.float32) for v, s in zip(views, sink)}

    from fla.models.utils import Cache

    cache = Cache()
    per_layer: dict[int, list[torch.Tensor]] = {v.index: [] for v in views}
    try:
        start = 0
        for end in tqdm(pos, desc="capture", unit="seg", disable=not progress, leave=False):
            backbone(input_ids=input_ids[:, start:end], past_key_values=cache, use_cache=True)
            for v in views:
                layer_idx = getattr(v.module, "layer_idx", v.index)
                state = fam.state_from_cache(cache[layer_idx])  # [B, HV, d_k, d_v]
                # clone: a later segment may update the cached tensor in place
                per_layer[v.index].append(state.to(out_device, torch.float32, copy=True))
            start = end
    finally:
        model.train(was_training)
    return {layer: torch.stack(s, dim=2) for layer, s in per_layer.items()}


@torch.no_grad()
def plain_forward(model, input_ids: torch.Tensor):
    """One ordinary forward of the full LM (logits, no cache): the reference for profiling timings."""
    if next(model.parameters()).device.type == "cpu":
        backends.auto()
    device = next(model.parameters()).device
    return model(input_ids=input_ids.to(device), use_cache=False).logits


__all__ = ["log_positions", "check_positions", "capture_states", "plain_forward"]
