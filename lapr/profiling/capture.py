"""Capture the recurrent states S_t of every linear-attention layer at chosen token counts t.

Method "single_pass" (default): one forward of the backbone; every chunked delta-rule pass already
computes the state at each chunk start (h) and the WY "new values" of every token (v_new), and the
state after any token follows from those in closed form (`lapr.backends.delta_rule.states_in_chunks`).
On CUDA the forward is fla's own: its `chunk_gated_delta_rule_fwd_h` (shared by DeltaNet and Gated
DeltaNet) is wrapped, and for the read-out called once more in float32, because in bf16 it stores h
rounded to bf16 and element-wise rounding would fill the spectrum of a low-rank state with noise at
~1e-3 of sigma_1, far above the rank threshold. Elsewhere (or when fla takes its recurrent path,
T <= 64, or for a family without an fla state pass, `Family.fla_state_pass`: GLA) the op is the
family's lapr op with `states_at` (`Family.state_op`: the chunked delta rule, lapr's chunked GLA). Either way the op sees exactly the
q, k, v, beta and gates the layer computes (GDN's decay gate and beta included), so the states are
the model's own, at the cost of one forward plus the read-outs (on an H100, the segment method
below cost 27x a forward for a 106M DeltaNet at T = 2048 with 32 positions).

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

import math
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


def _states_op(fam, want: list[int], sink: list, decay_sink: list | None = None):
    """An fla attention-kernel entry point that runs the family's lapr op (`Family.state_op`) and appends the states after the 0-based token indices `want` ([B, HV, P, d_k,
    d_v] float32) to `sink`, in call order (= layer order). decay_sink (optional) gets each call's
    per-head mean log decay (mean_log_decay)."""
    def op(*args, **kwargs):
        o, final, states = fam.state_op()(*args, **kwargs, states_at=want)
        sink.append(states)
        if decay_sink is not None:
            decay_sink.append(mean_log_decay(fam, *args, **kwargs))
        return o, final
    return op


def mean_log_decay(fam, *args, **kwargs) -> torch.Tensor | None:
    """Per-head mean over tokens of the natural-log decay g_t = log alpha_t that one kernel call of
    family `fam` applies ([B, HV] float32), or None for an ungated call (DeltaNet): the family's
    reading of the call's arguments (Family.mean_log_decay; Gated DeltaNet's g is raw when
    use_gate_in_kernel, GLA's decay is averaged over the key channels too)."""
    import inspect

    bound = inspect.signature(fam.state_op()).bind(*args, **kwargs).arguments
    return fam.mean_log_decay(bound)


def chunk_log_decay_mean(g_cum: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Per-head mean natural-log decay from fla's chunk-local cumulative gate g_cum [B, T, HV] (log2
    units, the cumsum restarting at each chunk): the sum over tokens of g_t is the sum of each chunk's
    last cumsum value, so mean g = ln 2 * sum(chunk ends) / T. [B, HV] float32."""
    T = g_cum.shape[1]
    ends = list(range(chunk_size - 1, T, chunk_size))
    if not ends or ends[-1] != T - 1:
        ends.append(T - 1)  # the last, partial chunk
    return g_cum[:, ends].float().sum(dim=1) * (math.log(2.0) / T)


def fla_states_pass(state_pass, want: list[int], sink: list, decay_sink: list | None = None):
    """Wrap fla's `chunk_gated_delta_rule_fwd_h(k, w, u, g, ...)` -> (h, v_new, final): the forward
    gets the original's result unchanged; a second float32 call supplies h and v_new for the
    read-out of the states after the 0-based tokens `want`, appended to `sink` ([B, HV, P, K, V]).
    decay_sink (optional) gets each call's per-head mean natural-log decay [B, HV] from g
    (chunk_log_decay_mean), or None when the call has no gate (DeltaNet).
    fla's layouts: k [B, T, H, K]; w [B, T, HV, K]; u, v_new [B, T, HV, V]; g [B, T, HV] is the
    chunk-local cumulative log decay in log2 units (fla scales it by 1/ln 2 for exp2); h is
    [B, NT, HV, K, V], or [B, NT, HV, V, K] with state_v_first (Gated DeltaNet's layer)."""
    def wrapped(k, w, u, g=None, gk=None, initial_state=None, output_final_state=False, chunk_size=64,
                save_new_value=True, state_v_first=False, cu_seqlens=None, **kwargs):
        if gk is not None or cu_seqlens is not None:
            raise NotImplementedError("state capture supports scalar gates and unpacked batches only")
        out = state_pass(k, w, u, g=g, initial_state=initial_state, output_final_state=output_final_state,
                         chunk_size=chunk_size, save_new_value=save_new_value, state_v_first=state_v_first,
                         **kwargs)
        h, v_new, _ = state_pass(k.float(), w.float(), u.float(), g=g,
                                 initial_state=None if initial_state is None else initial_state.float(),
                                 output_final_state=False, chunk_size=chunk_size, save_new_value=True,
                                 state_v_first=state_v_first, **kwargs)
        sink.append(read_out(h, k, v_new, g, want, chunk_size, state_v_first))
        if decay_sink is not None:
            decay_sink.append(None if g is None else chunk_log_decay_mean(g, chunk_size))
        return out
    return wrapped


def read_out(h, k, v_new, g, want: list[int], chunk_size: int, state_v_first: bool) -> torch.Tensor:
    """fla's state-pass results in fla's layouts (see fla_states_pass) -> states [B, HV, P, K, V]."""
    HV, H = v_new.shape[2], k.shape[2]
    h = h.transpose(1, 2)                                        # [B, HV, NT, ., .]
    if state_v_first:
        h = h.transpose(-1, -2)
    k = k.transpose(1, 2).repeat_interleave(HV // H, dim=1)      # value head i reads key head i // (HV/H)
    g = torch.zeros(v_new.shape[:3], device=v_new.device) if g is None else g.float() * math.log(2.0)
    return backends.states_in_chunks(h, k, v_new.transpose(1, 2), g.transpose(1, 2), want, chunk_size)


@torch.no_grad()
def capture_states(model, input_ids: torch.Tensor, positions: Sequence[int], out_device=None,
                   progress: bool = False, method: str = "single_pass",
                   decays: dict | None = None) -> dict[int, torch.Tensor]:
    """States of every attention layer after `positions` tokens of `input_ids`.

    model: an fla DeltaNet / Gated DeltaNet causal LM (any family with a lapr adapter), in eval mode.
    input_ids: LongTensor [B, T]; positions: strictly increasing 1-based token counts <= T.
    Returns {layer: float32 Tensor [B, HV, P, d_k, d_v]}, layer = the attention layer's index in
    `family(model).attention(model)` (order of the model's modules), P = len(positions), on
    `out_device` (default: the model's device). method: "single_pass" or "segments" (module doc).
    decays: a dict to fill, single_pass only (same forward, no extra pass), with {layer: float32 [B, HV]
    mean over the T tokens of the log decay g_t = log alpha_t} for the gated layers (Gated DeltaNet);
    ungated layers (DeltaNet) and the segments method leave no entry.
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
        decay_sink: list = []
        want = [p - 1 for p in pos]
        try:
            if reader(model) == "fla" and fam.fla_state_pass:
                state_pass = backends.owner("fla.ops.common.chunk_delta_h").chunk_gated_delta_rule_fwd_h
                with backends.swapped(fla_states_pass(state_pass, want, sink, decay_sink),
                                      list(fam.fla_state_pass)):
                    backbone(input_ids=input_ids, use_cache=False)
            if not sink:  # lapr's op (CPU; a family without an fla state pass), or fla's recurrent path
                decay_sink.clear()
                with backends.swapped(_states_op(fam, want, sink, decay_sink), backends.attention_ops(fam)):
                    backbone(input_ids=input_ids, use_cache=False)
        finally:
            model.train(was_training)
        if len(sink) != len(views):
            raise RuntimeError(f"{len(sink)} attention op calls for {len(views)} attention layers: the "
                               f"model calls its delta-rule op through a path lapr does not patch")
        if decays is not None:
            decays.update({v.index: d.to(out_device, torch.float32)
                           for v, d in zip(views, decay_sink) if d is not None})
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


def reader(model) -> str:
    """Which single-pass read-out capture_states uses for `model`: 'fla' (fla's state pass, CUDA
    with fla's kernels installed) or 'lapr' (lapr's chunked op)."""
    on_cuda = next(model.parameters()).device.type == "cuda"
    return "fla" if on_cuda and not backends.cpu_backend_active() else "lapr"


@torch.no_grad()
def plain_forward(model, input_ids: torch.Tensor):
    """One ordinary forward of the full LM (logits, no cache): the reference for profiling timings."""
    if next(model.parameters()).device.type == "cpu":
        backends.auto()
    device = next(model.parameters()).device
    return model(input_ids=input_ids.to(device), use_cache=False).logits


__all__ = ["log_positions", "check_positions", "capture_states", "plain_forward", "reader",
           "fla_states_pass", "read_out", "mean_log_decay", "chunk_log_decay_mean"]
