"""Decode steps captured in CUDA graphs: what a step costs once launch overhead is gone.

Eager decode launches every kernel of a step from Python; at decode sizes (one token per sequence)
the host's launch overhead, not the state, sets the time (~120 us for one fused-recurrent step at
any d_k on an H200). Serving engines capture the step in a CUDA graph and replay it. This module
does the same, at two levels:

- op level, `OpDecodeStep`: one fused-recurrent decode step (the kernel `lapr.bench.ops.kernel(family,
  'decode', impl)` returns) with static q/k/v/beta(/g/A_log/dt_bias) and a static float32 state
  buffer; inside the graph the kernel's new state is copied back into the static state, so replays
  carry the state on from step to step as decode does. (fla 0.6's fused_recurrent kernels always
  write the final state to a fresh tensor, so the copy-back is part of every graph step: it moves
  the state's bytes a second time, see `ops.bandwidth_columns`.)
- model level, `GraphDecoder(model, cache)`: the whole model's cached decode step
  `model(input_ids=static_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)`. fla's
  Cache (fla/models/cache_utils.py) keeps per layer a dict with 'recurrent_state' (a tensor) and
  'conv_state' (a tuple of q/k/v short-conv states) that the layers REPLACE with new tensors each
  step (the recurrent state) or update in place (ShortConvolution.step, on a single token without
  autograd, fla's Triton kernel and lapr's CPU stand-in alike). The decoder clones every cache
  tensor into a static buffer, points the cache at the buffers, and after the model call copies
  each new tensor back into its buffer (skipped where the layer already wrote in place) and
  re-points the cache; captured, those copies are nodes of the graph.

Both take `capture`: True records the step in a torch.cuda.CUDAGraph (warm-up on a side stream
first, as PyTorch requires: Triton compiles and autotunes there; the state buffers are restored
after warm-up, so a decoder starts from exactly the cache it was given) and every call replays it;
False runs the very same static-buffer code eagerly, with no graph (how the CPU tests check the
logic); None: capture on CUDA.

What the decode path does per step, checked in fla 0.6 (layers/delta_net.py, layers/gated_deltanet.py,
modules/causal_conv1d/ops.py, models/modeling_utils.py): both layers pick the fused-recurrent kernel
from q_len alone (DeltaNet: q_len <= 64; GDN: q_len <= 64, not training, grad disabled), read the
cache's 'recurrent_state' and 'conv_state' and nothing else (no attention mask, no cu_seqlens on this
path, so no host sync), and the short convolutions take their single-token `step`. The only other
cache read is `get_seq_length()` (the `_seen_tokens` counters), which nothing on this path calls. A
replay does not run the Python that increments those counters, so the decoder restores them after
warm-up and capture and adds one step's increment per replay: `cache.get_seq_length()` stays what
eager decode would give. Everything else is device work on static shapes (Triton launches, cuBLAS
GEMMs, allocations from the graph's private pool).

Timing (`time_replays`): graph replays are timed with CUDA events around each replay while the
GPU's queue is kept ahead of the host (a spin kernel, `torch.cuda._sleep`, is queued before each
block of replays), so a row's time is the step's device time; the host time to launch one replay is
reported beside it (`host_ms`). Eager rows keep `lapr.bench.timing.time_fn`, whose per-call time
includes the host launch overhead, because that overhead is what an eager step costs.

Driver (the headline table, one command on a GPU machine, < 6 min on one H200):

    python -m lapr.bench.graph_decode --out DIR
    python -m lapr.bench.graph_decode --out DIR --dry --device cpu     # smoke test on a CPU

(a) op level: both families, decode, d_k 128/96/64/32, B 1/8/64/256, H 6, d_v 128, graph and eager;
(b) model level: random-initialised models of the gpu profile's shape (workflow/config/gpu.yaml:
hidden 768, 14 layers, 6 heads, d_v 128, mlp_ratio 4, vocab 8192, ~100M parameters) at head_k_dim
128/96/64/32, which are exactly the shapes key-channel pruning at r = 0, 0.25, 0.5, 0.75 produces
from d_k = 128 (lapr.pruning.kept_dim; pruning changes only the q/k projections and short convs),
bf16, decode at B 1/8/64/256 after a 64-token prompt, graph and eager; before timing, for every
model and B, graph replay is checked against eager decode over 8 steps (max abs logit / state
difference recorded in the rows and the provenance). Writes DIR/ops_decode_<device>.csv,
DIR/model_decode_<device>.csv (rewritten after every row) and DIR/provenance.json.
"""
from __future__ import annotations

import argparse
import functools
import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lapr.bench import ops, timing

# ---------------------------------------------------------------------------------------------
# capture


def _default_capture(device) -> bool:
    return torch.device(device).type == "cuda"


def _capture(step: Callable[[], object], device, warmup: int, pool=None, before_capture=None):
    """Warm `step` up on a side stream (`warmup` calls, at least 1: Triton compiles there), call
    `before_capture()`, then capture one call into a CUDA graph. Returns (graph, output of the
    captured call). The low-level capture_begin/capture_end is used instead of `torch.cuda.graph`
    to skip its empty_cache per capture (many small graphs are captured per bench row)."""
    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(max(1, warmup)):
            step()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    if before_capture is not None:
        before_capture()
    graph = torch.cuda.CUDAGraph()
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        graph.capture_begin(pool=pool)
        try:
            out = step()
        finally:
            graph.capture_end()
    torch.cuda.current_stream(device).wait_stream(stream)
    return graph, out


class OpDecodeStep:
    """One fused-recurrent decode step with static inputs and a static state, as a callable.

    `inputs`: the kwargs of `ops.kernel(family, 'decode', impl)` (as `ops.make_inputs` makes them,
    `initial_state` included); they are cloned into static buffers. Each call (optionally copying
    new values into the static inputs first: `step(q=..., k=...)`) runs one step: the kernel reads
    the static state and the new state is copied back into it. Returns the output `o`; captured,
    it is the same static tensor every replay (clone it to keep it).
    """

    def __init__(self, family: str, inputs: dict, impl: str = "fla", capture: bool | None = None,
                 warmup: int = 3, pool=None):
        self.fn = ops.kernel(family, "decode", impl)
        with torch.inference_mode():
            self.static = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if not isinstance(self.static.get("initial_state"), torch.Tensor):
            raise ValueError("OpDecodeStep needs an `initial_state` tensor (the static state buffer)")
        self.state = self.static["initial_state"]
        self.device = self.state.device
        self.capture = _default_capture(self.device) if capture is None else bool(capture)
        self.graph, self.out = None, None
        if self.capture:
            with torch.inference_mode():
                saved = self.state.clone()
                self.graph, self.out = _capture(self._step, self.device, warmup, pool,
                                                before_capture=lambda: self.state.copy_(saved))

    def _step(self):
        o, final_state = self.fn(**self.static)
        self.state.copy_(final_state)
        return o

    def __call__(self, **new_inputs) -> torch.Tensor:
        with torch.inference_mode():
            for key, value in new_inputs.items():
                self.static[key].copy_(value)
            if self.graph is not None:
                self.graph.replay()
                return self.out
            return self._step()


def capture_decode_step(family: str, inputs: dict, impl: str = "fla", capture: bool | None = None,
                        warmup: int = 3, pool=None) -> OpDecodeStep:
    """The op-level helper: `OpDecodeStep(...)`, a callable that replays one captured decode step."""
    return OpDecodeStep(family, inputs, impl, capture, warmup, pool)


# ---------------------------------------------------------------------------------------------
# the model-level decoder

CACHE_KEYS = ("recurrent_state", "conv_state")       # what DeltaNet / GDN layers keep per layer
UNSUPPORTED_KEYS = ("attn_state", "ffn_state")       # a growing KV cache cannot live in a static buffer


def cache_states(cache) -> list[dict]:
    """The per-layer state dicts of an fla Cache (Cache / FLACache: cache[i] is layer i's dict)."""
    return [cache[i] for i in range(len(cache))]


def _seen_counters(cache) -> list:
    """The objects holding a `_seen_tokens` counter: the cache and each of its layers."""
    objs = [cache] if hasattr(cache, "_seen_tokens") else []
    return objs + [layer for layer in getattr(cache, "layers", []) if hasattr(layer, "_seen_tokens")]


class GraphDecoder:
    """A model's cached decode step on static buffers, captured once in a CUDA graph and replayed.

    `cache`: the fla Cache a prompt left (model(prompt, use_cache=True).past_key_values); its
    tensors are cloned into static buffers and the cache is pointed at them (the decoder then owns
    the cache: it holds the current state after every step). `batch_size`: the static batch (default:
    the cache's). `step(input_ids)` copies [B, 1] ids into the static ids (none: decode the ids
    already there) and runs one step; it returns the logits [B, 1, vocab], captured the same static
    tensor every replay (clone to keep).
    """

    def __init__(self, model, cache, batch_size: int | None = None, capture: bool | None = None,
                 warmup: int = 3, pool=None):
        self.model, self.cache = model, cache
        self.device = next(model.parameters()).device
        self.slots: list[tuple[int, str, int | None]] = []
        current: list[torch.Tensor] = []
        for i, state in enumerate(cache_states(cache)):
            bad = [k for k in UNSUPPORTED_KEYS if state.get(k) is not None]
            if bad:
                raise ValueError(f"GraphDecoder: layer {i} keeps {bad} (a growing attention/ffn cache); only "
                                 f"recurrent layers ({list(CACHE_KEYS)}) decode on static buffers")
            for key in CACHE_KEYS:
                value = state.get(key)
                if isinstance(value, torch.Tensor):
                    self.slots.append((i, key, None))
                    current.append(value)
                elif isinstance(value, (tuple, list)):
                    for j, item in enumerate(value):
                        if isinstance(item, torch.Tensor):
                            self.slots.append((i, key, j))
                            current.append(item)
        if not self.slots:
            raise ValueError("GraphDecoder: the cache holds no state; run the prompt with use_cache=True first")
        batch = batch_size or current[0].shape[0]
        with torch.inference_mode():
            self.buffers = [t.clone(memory_format=torch.contiguous_format) for t in current]
            self.ids = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self._point_cache()
        self.counters = _seen_counters(cache)
        self.per_step = [0] * len(self.counters)
        self.capture = _default_capture(self.device) if capture is None else bool(capture)
        self.graph, self.logits = None, None
        if self.capture:
            self._build_graph(warmup, pool)

    # the cache <-> static buffers

    def _get(self, slot):
        i, key, j = slot
        value = self.cache[i][key]
        return value if j is None else value[j]

    def _point_cache(self) -> None:
        """Make every cache entry the static buffer of its slot (tuples rebuilt, Nones kept)."""
        states = cache_states(self.cache)
        tuples: dict[tuple[int, str], list] = {}
        for (i, key, j), buf in zip(self.slots, self.buffers):
            if j is None:
                states[i][key] = buf
            else:
                tuples.setdefault((i, key), list(states[i][key]))[j] = buf
        for (i, key), items in tuples.items():
            states[i][key] = tuple(items)

    def _step(self):
        out = self.model(input_ids=self.ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        for slot, buf in zip(self.slots, self.buffers):
            new = self._get(slot)
            if new is None or new.shape != buf.shape:
                raise RuntimeError(f"GraphDecoder: cache entry {slot} became "
                                   f"{None if new is None else tuple(new.shape)}, expected {tuple(buf.shape)}")
            if new is not buf:                  # the short convs update their buffer in place
                buf.copy_(new)
        self._point_cache()
        return out.logits

    def _build_graph(self, warmup: int, pool) -> None:
        with torch.inference_mode():
            saved = [b.clone() for b in self.buffers]
            seen = [c._seen_tokens for c in self.counters]
            first = [True]

            def step():
                out = self._step()
                if first[0]:               # one step's increment of every counter
                    self.per_step = [c._seen_tokens - s for c, s in zip(self.counters, seen)]
                    first[0] = False
                return out

            def restore():
                for buf, snap in zip(self.buffers, saved):
                    buf.copy_(snap)

            self.graph, self.logits = _capture(step, self.device, warmup, pool, before_capture=restore)
            for c, s in zip(self.counters, seen):
                c._seen_tokens = s

    def step(self, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            if input_ids is not None:
                self.ids.copy_(input_ids.reshape(self.ids.shape))
            if self.graph is None:
                return self._step()
            self.graph.replay()
            for c, d in zip(self.counters, self.per_step):
                c._seen_tokens += d
            return self.logits

    __call__ = step

    def states(self) -> list[torch.Tensor]:
        """The static state buffers (the cache's current tensors), in slot order."""
        return list(self.buffers)


# ---------------------------------------------------------------------------------------------
# verification: graph (or static-buffer) decode against plain eager decode


def clone_cache(cache):
    """An independent copy of an fla Cache (every tensor cloned, counters kept)."""
    cls = type(cache)
    states = tuple({k: (v.clone() if isinstance(v, torch.Tensor)
                        else tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in v)
                        if isinstance(v, (tuple, list)) else v)
                    for k, v in state.items()} for state in cache_states(cache))
    with torch.inference_mode():
        copy = cls.from_legacy_cache(states, seen_tokens=cache.get_seq_length())
    for mine, theirs in zip(_seen_counters(copy), _seen_counters(cache)):
        mine._seen_tokens = theirs._seen_tokens
    return copy


def random_ids(vocab: int, B: int, T: int, device, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g).to(device)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def compare_decode(model, cache, steps: int = 8, seed: int = 1, capture: bool | None = None,
                   decoder: GraphDecoder | None = None) -> tuple[dict, GraphDecoder]:
    """Decode `steps` random tokens twice from the same `cache`: plain eager cached decode (on a
    clone) and a GraphDecoder (on `cache` itself, or `decoder` if given, built on it). Returns
    ({logits_max_abs_diff, state_max_abs_diff, logits_max_abs, steps, equal}, decoder); afterwards
    the decoder holds the state after `steps` tokens."""
    with torch.inference_mode():
        ref_cache = clone_cache(cache)
        dec = decoder or GraphDecoder(model, cache, capture=capture)
        B, vocab = dec.ids.shape[0], model.config.vocab_size
        d_logits, scale, equal = 0.0, 0.0, True
        for t in range(steps):
            ids = random_ids(vocab, B, 1, dec.device, seed + t)
            ref = model(input_ids=ids, past_key_values=ref_cache, use_cache=True, logits_to_keep=1).logits
            got = dec.step(ids)
            d_logits = max(d_logits, _max_abs(got, ref))
            scale = max(scale, float(ref.float().abs().max()))
            equal = equal and torch.equal(got, ref)
        d_state = 0.0
        for slot, buf in zip(dec.slots, dec.buffers):
            i, key, j = slot
            ref_value = ref_cache[i][key] if j is None else ref_cache[i][key][j]
            d_state = max(d_state, _max_abs(buf, ref_value))
            equal = equal and torch.equal(buf, ref_value)
        if dec.cache.get_seq_length() != ref_cache.get_seq_length():
            raise AssertionError(f"seen tokens {dec.cache.get_seq_length()} != eager {ref_cache.get_seq_length()}")
    return {"logits_max_abs_diff": d_logits, "state_max_abs_diff": d_state, "logits_max_abs": scale,
            "steps": steps, "equal": bool(equal)}, dec


# ---------------------------------------------------------------------------------------------
# timing replays

_CYCLES_PER_MS: dict = {}


def _cycles_per_ms(device) -> float:
    """GPU clock cycles per ms of `torch.cuda._sleep` (measured once per device; the most of three
    tries, i.e. at the highest clock seen, so that a spin lasts at least as long as asked)."""
    key = torch.device(device).index if torch.device(device).index is not None else torch.cuda.current_device()
    if key not in _CYCLES_PER_MS:
        cycles, rates = 10_000_000, []
        for _ in range(3):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(cycles)
            end.record()
            torch.cuda.synchronize(device)
            rates.append(cycles / max(start.elapsed_time(end), 1e-3))
        _CYCLES_PER_MS[key] = max(rates)
    return _CYCLES_PER_MS[key]


def _queued_block(calls: Sequence[Callable], start: int, count: int, device, spin_ms: float):
    """`count` calls (rotating through `calls` from index `start`), each between two CUDA events,
    queued behind a spin of `spin_ms` so the GPU runs them back to back. Returns (ms per call,
    host ms per call)."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(count)]
    torch.cuda._sleep(int(spin_ms * _cycles_per_ms(device)))
    t0 = time.perf_counter()
    for j, (s, e) in enumerate(events):
        s.record()
        calls[(start + j) % len(calls)]()
        e.record()
    host_ms = (time.perf_counter() - t0) * 1e3 / count
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) for s, e in events], host_ms


def time_replays(calls: Sequence[Callable], device, *, repeats: int = 50, warmup: int | None = None,
                 min_warmup: int = 3, max_warmup: int = 50, window: int = 5, tol: float = 0.05,
                 block: int = 25, **_ignored) -> tuple[timing.TimingResult, float | None]:
    """Time `calls[i % n]()` (captured steps) as `timing.time_fn` does (first call apart, warm-up
    until stable, median/IQR of `repeats`), but on a GPU with the queue kept ahead of the host, so
    each time is the replay's device time. Returns (TimingResult with clock 'cuda_events_queued',
    median host ms to launch one call). On a CPU: `timing.time_fn` (host ms None)."""
    if torch.device(device).type != "cuda":
        res = timing.time_fn(lambda c: c(), [(c,) for c in calls], device=device, repeats=repeats, warmup=warmup,
                             min_warmup=min_warmup, max_warmup=max_warmup, window=window, tol=tol)
        return res, None
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    hosts: list[float] = []
    spin = 2.0                      # ms; then 4x the host time the last block took to queue (>= 2 ms)
    i = 0
    with torch.inference_mode():
        timing.synchronize(device)
        first, host = _queued_block(calls, i, 1, device, 0.0)
        i += 1
        warm: list[float] = []
        target = warmup if warmup is not None else max_warmup
        while len(warm) < target:
            group = min(window, target - len(warm))
            times, host = _queued_block(calls, i, group, device, spin)
            i += group
            warm += times
            spin = max(2.0, 4.0 * host * block)
            if warmup is None and len(warm) >= min_warmup and timing.warmed_up(warm, window, tol):
                break
        measured: list[float] = []
        while len(measured) < repeats:
            group = min(block, repeats - len(measured))
            times, host = _queued_block(calls, i, group, device, spin)
            i += group
            measured += times
            hosts.append(host)
            spin = max(2.0, 4.0 * host * block)
    res = timing.TimingResult(times_ms=measured, first_call_ms=first[0], warmup_ms=warm,
                              clock="cuda_events_queued")
    return res, float(sorted(hosts)[len(hosts) // 2])


def measure_replays(calls: Sequence[Callable], tokens: int, device, build_ms: float, peak_bytes: int | None,
                    **timing_kw) -> dict:
    """The measured columns of a graph row (as ops.measure's, plus host_ms). first_call_ms is the
    wall time to build the first graph: warm-up (Triton compile and autotune) and capture."""
    res, host = time_replays(calls, device, **{**ops.TIMING_DEFAULTS, **timing_kw})
    mem_method = timing.MEM_METHOD_CUDA if torch.device(device).type == "cuda" else ""
    return {**ops.measured_columns(res, tokens, peak_bytes, mem_method), "first_call_ms": build_ms,
            "host_ms": host}


class _PeakSince:
    """GPU bytes allocated at the peak since entry, above what was allocated at entry (None on CPU)."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.bytes: int | None = None

    def __enter__(self):
        if self.cuda:
            timing.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.cuda:
            timing.synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_allocated(self.device) - self.base)
        return False


def bench_op_graph(shape: ops.Shape, impl: str, device, dtype, seed: int = 0, n_inputs: int | None = None,
                   capture: bool | None = None, **timing_kw) -> dict:
    """Measured columns of an op-level graph decode row: one captured step per rotated input set
    (as many sets as the eager row rotates, so neither finds its state hot in L2), replays timed.
    peak_mem_bytes: what building the first graph allocated at its peak (static inputs and state,
    the graph's pool)."""
    if shape.phase != "decode":
        raise ValueError("graph mode is for decode shapes")
    first = ops.make_inputs(shape, device, dtype, seed)
    n = n_inputs or timing.n_input_sets(timing.tensor_bytes(first), device)
    t0 = time.perf_counter()
    with _PeakSince(device) as peak:
        steps = [OpDecodeStep(shape.family, first, impl, capture)]
    build_ms = (time.perf_counter() - t0) * 1e3
    del first
    steps += [OpDecodeStep(shape.family, ops.make_inputs(shape, device, dtype, seed + i), impl, capture)
              for i in range(1, n)]
    return measure_replays(steps, shape.tokens, device, build_ms, peak.bytes, **timing_kw)


def bench_model_graph(model, cache, B: int, device, seed: int = 0, capture: bool | None = None,
                      verify_steps: int = 0, **timing_kw) -> dict:
    """Measured columns of a model-level graph decode row, from the `cache` a prompt left: a
    GraphDecoder built on it (optionally first checked against eager decode over `verify_steps`
    tokens: columns verify_logits_max_abs_diff, verify_state_max_abs_diff), replays of one random
    token per sequence timed (the ids stay in the static buffer: no per-step input copy)."""
    t0 = time.perf_counter()
    with _PeakSince(device) as peak:
        dec = GraphDecoder(model, cache, B, capture=capture)
    build_ms = (time.perf_counter() - t0) * 1e3
    extra = {}
    if verify_steps:
        check, _ = compare_decode(model, cache, verify_steps, seed=seed + 1000, decoder=dec)
        extra = {"verify_logits_max_abs_diff": check["logits_max_abs_diff"],
                 "verify_state_max_abs_diff": check["state_max_abs_diff"], "verify_equal": check["equal"]}
    with torch.inference_mode():
        dec.ids.copy_(random_ids(model.config.vocab_size, B, 1, device, seed + 1))
    return {**measure_replays([dec.step], B, device, build_ms, peak.bytes, **timing_kw), **extra}


# ---------------------------------------------------------------------------------------------
# the driver

UNPRUNED_D_K = 128
RATIOS = (0.0, 0.25, 0.5, 0.75)
# the gpu profile's models (workflow/config/gpu.yaml), vocab of its 8k tokenizer; d_k set per model
GPU_SPEC = {"hidden_size": 768, "num_layers": 14, "num_heads": 6, "head_v_dim": 128, "mlp_ratio": 4,
            "vocab_size": 8192}
OPS_GRID = {"families": list(ops.FAMILIES), "phases": ["decode"], "B": [1, 8, 64, 256], "H": 6, "d_v": 128}
MODEL_GRID = {"decode_batch": [1, 8, 64, 256], "prompt_len": 64}
TIMING = {"repeats": 30, "min_warmup": 3, "max_warmup": 20}
VERIFY_STEPS = 8
DRY_SPEC = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "head_v_dim": 16, "mlp_ratio": 2,
            "vocab_size": 256}
DRY_D_K = [32, 16]
DRY_OPS_GRID = {**OPS_GRID, "B": [1, 2], "H": 2, "d_v": 16}
DRY_MODEL_GRID = {"decode_batch": [1, 2], "prompt_len": 8}
DRY_TIMING = {"repeats": 3, "warmup": 1}
OPS_SHARE = 0.35   # of the budget, for the op grid (its Triton compiles are shared with the models)

log = functools.partial(print, flush=True)


def pruned_d_ks(d_k: int = UNPRUNED_D_K, ratios=RATIOS) -> list[int]:
    """The key dims pruning `d_k` at `ratios` keeps (lapr.pruning.kept_dim, multiple 1; r = 0 is the
    unpruned model)."""
    from lapr.pruning import kept_dim

    return [d_k if r == 0 else kept_dim(d_k, r) for r in ratios]


def model_spec(family: str, d_k: int, base: dict) -> dict:
    return {"family": family, **base, "head_k_dim": d_k}


def build_on(device, spec: dict):
    """lapr.models.build_model initialised directly on `device` (a ~100M model initialises in a
    fraction of a second on a GPU, seconds on a CPU); built on the CPU and moved if that fails."""
    from lapr.models import build_model

    try:
        with torch.device(device):
            model = build_model(spec, seed=0)
        if next(model.parameters()).device.type == torch.device(device).type:
            return model
    except Exception:  # noqa: BLE001 — e.g. an init that refuses the device context: the slow way
        log(traceback.format_exc(limit=2))
    return build_model(spec, seed=0).to(device)


def _model_rows_skipped(family, d_k, d_k0, grid, device, modes, error) -> list[dict]:
    base = {"level": "model", "family": family, "impl": ops.default_impls(device)[0],
            "device": timing.device_label(device), "d_k": d_k, "d_k_unpruned": d_k0, "phase": "decode", "T": 1,
            "model": f"random-{family}", "method": "random-init", "ratio": 1 - d_k / d_k0, "error": error}
    return [{**base, "B": B, "decode_mode": m} for B in grid["decode_batch"] for m in modes]


def run(out: Path, device, dry: bool = False, budget_s: float = 330.0, modes=None, families=None,
        d_ks=None, no_ops: bool = False, no_model: bool = False) -> dict:
    from lapr import provenance
    from lapr.bench import models, stage
    from lapr.bench.tables import write_rows

    t0 = time.monotonic()
    label = timing.device_label(device)
    out.mkdir(parents=True, exist_ok=True)
    modes = ops.decode_modes_for(device, modes)
    families = list(families or ops.FAMILIES)
    d_k0 = DRY_D_K[0] if dry else UNPRUNED_D_K
    d_ks = list(d_ks or (DRY_D_K if dry else pruned_d_ks()))
    spec, ops_grid, model_grid = (DRY_SPEC, DRY_OPS_GRID, DRY_MODEL_GRID) if dry else (GPU_SPEC, OPS_GRID, MODEL_GRID)
    timing_kw = DRY_TIMING if dry else TIMING
    dtype = ops.default_dtype(device)
    verify_capture = None if label == "cuda" else False   # on CPU, the static-buffer path alone
    ops_csv, model_csv = out / f"ops_decode_{label}.csv", out / f"model_decode_{label}.csv"
    settings = {"ops": {**ops_grid, "families": families, "d_k": d_ks}, "model": {**spec, **model_grid,
                "families": families, "d_k": d_ks, "verify_steps": VERIFY_STEPS}, "timing": timing_kw,
                "decode_modes": modes, "dtype": str(dtype).removeprefix("torch."), "d_k_unpruned": d_k0,
                "budget_s": budget_s, "dry": dry}
    facts = stage.hardware_facts(device)
    verified: list[dict] = []

    def write_meta(ops_rows, model_rows, complete):
        rows = ops_rows + model_rows
        meta = provenance.record(
            settings=settings, seed=0, device=device, bench=facts, complete=complete,
            elapsed_s=round(time.monotonic() - t0, 1), rows={"ops": len(ops_rows), "model": len(model_rows)},
            errors=sum(bool(r.get("error")) for r in rows), verification=verified,
            results=[p.name for p, r in ((ops_csv, ops_rows), (model_csv, model_rows)) if r],
            notes="decode only, forward under inference_mode. graph rows: CUDA-graph replays, device time per "
                  "step with the GPU queue kept ahead of the host (clock cuda_events_queued), host launch time "
                  "in host_ms, first_call_ms = warm-up + capture wall time; the graph step includes copying the "
                  "new recurrent state back into the static state. eager rows: lapr.bench.timing.time_fn, per-call "
                  "time including host launch overhead. Models are random-initialised at the shapes pruning "
                  f"d_k={d_k0} at r={list(RATIOS)} produces (ratio column); verification: graph vs eager decode "
                  f"over {VERIFY_STEPS} tokens per model and B before timing.")
        provenance.write_json(out / "provenance.json", meta)
        return meta

    write_meta([], [], complete=False)
    log(f"graph_decode on {label} ({facts.get('device_name')}), dtype {dtype}, modes {modes}, d_k {d_ks}, "
        f"budget {budget_s:.0f} s")
    ops_rows: list[dict] = []
    if not no_ops:
        shapes = ops.expand_grid({**ops_grid, "families": families, "d_k": d_ks}, device)
        ops_rows = ops.run_grid(shapes, ops.default_impls(device), device=device, dtype=dtype, log=log,
                                deadline=t0 + OPS_SHARE * budget_s, decode_modes=modes, d_k_unpruned=d_k0,
                                on_progress=functools.partial(write_rows, ops_csv, columns=ops.COLUMNS), **timing_kw)
        write_rows(ops_csv, ops_rows, ops.COLUMNS)
    model_rows: list[dict] = []
    write = functools.partial(write_rows, model_csv, columns=models.MODEL_COLUMNS)
    for d_k in ([] if no_model else d_ks):
        for family in families:
            if time.monotonic() > t0 + budget_s:
                model_rows += _model_rows_skipped(family, d_k, d_k0, model_grid, device, modes,
                                                  "skipped: time budget exhausted")
                write(model_rows)
                continue
            model = None
            try:
                model = build_on(device, model_spec(family, d_k, spec)).to(dtype=dtype).eval()
                rows = models.bench_model(
                    model, device=device, prefill_batch=(), prefill_len=(), decode_batch=model_grid["decode_batch"],
                    prompt_len=model_grid["prompt_len"], log=log, decode_modes=modes, verify_steps=VERIFY_STEPS,
                    verify_capture=verify_capture,
                    labels={"model": f"random-{family}", "method": "random-init", "ratio": 1 - d_k / d_k0,
                            "d_k_unpruned": d_k0}, **timing_kw)
                for r in rows:
                    if "verify_logits_max_abs_diff" in r:
                        verified.append({k: r.get(k) for k in ("family", "d_k", "B", "verify_logits_max_abs_diff",
                                                               "verify_state_max_abs_diff", "verify_equal")})
                model_rows += rows
            except Exception as exc:  # noqa: BLE001 — a model that fails must not end the run
                log(traceback.format_exc(limit=4))
                model_rows += _model_rows_skipped(family, d_k, d_k0, model_grid, device, modes, ops.error_text(exc))
            finally:
                del model
                timing.release_cuda_memory(device)
            write(model_rows)
    if model_rows:
        write(model_rows)
    meta = write_meta(ops_rows, model_rows, complete=True)
    log(headline(ops_rows, model_rows))
    log(f"done in {meta['elapsed_s']:.0f} s: {len(ops_rows)} op rows, {len(model_rows)} model rows, "
        f"{meta['errors']} with errors -> {out}")
    return meta


def headline(ops_rows: list[dict], model_rows: list[dict]) -> str:
    """A plain-text summary: per level, family, mode and B, time per step at each d_k and the
    speed-up over the largest d_k (ideal 1/(1-r) = d_k0/d_k)."""
    import pandas as pd

    lines = []
    for level, rows in (("op", ops_rows), ("model", model_rows)):
        df = pd.DataFrame(rows)
        if df.empty or "ms_median" not in df:
            continue
        df = df[(df["error"].fillna("") == "") & df["ms_median"].notna()]
        for (fam, mode, B), s in df.groupby(["family", "decode_mode", "B"]):
            s = s.sort_values("d_k", ascending=False)
            ms0 = s["ms_median"].iloc[0]
            d0 = s["d_k"].iloc[0]
            cells = [f"d_k {int(d)}: {ms * 1e3:.1f} us ({ms0 / ms:.2f}x/{d0 / d:.2f}x)"
                     for d, ms in zip(s["d_k"], s["ms_median"])]
            lines.append(f"{level:5s} {fam:14s} {mode:5s} B={int(B):4d}  " + "; ".join(cells))
    return "time per decode step (speed-up / ideal):\n" + "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m lapr.bench.graph_decode", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if present), 'cuda' or 'cpu'")
    parser.add_argument("--dry", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="wall-time budget (s): op rows start until 35 %% of it, models until all of it")
    parser.add_argument("--modes", default=None, help="comma list of decode modes (default: graph,eager on CUDA)")
    parser.add_argument("--families", default=None, help="comma list of families: " + ",".join(ops.FAMILIES))
    parser.add_argument("--d-k", default=None, help="comma list of d_k (default 128,96,64,32)")
    parser.add_argument("--no-ops", action="store_true", help="model level only")
    parser.add_argument("--no-model", action="store_true", help="op level only")
    args = parser.parse_args(argv)
    from lapr.bench import stage

    device = stage.resolve_device(args.device)
    split = (lambda s, cast=str: [cast(x) for x in s.split(",") if x.strip()] if s else None)
    families = split(args.families)
    if families and set(families) - set(ops.FAMILIES):
        raise ValueError(f"--families: known {list(ops.FAMILIES)}, got {families}")
    return run(Path(args.out), device, dry=args.dry, budget_s=args.budget_s, modes=split(args.modes),
               families=families, d_ks=split(args.d_k, int), no_ops=args.no_ops, no_model=args.no_model)


__all__ = ["OpDecodeStep", "capture_decode_step", "GraphDecoder", "compare_decode", "clone_cache",
           "time_replays", "bench_op_graph", "bench_model_graph", "pruned_d_ks", "run", "main", "GPU_SPEC"]


if __name__ == "__main__":
    main()
