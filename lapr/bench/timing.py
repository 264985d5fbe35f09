"""Timing and memory measurement done right, on GPU and CPU alike.

- Clock: CUDA events around every call on a GPU (the GPU's own timeline, one synchronisation after
  all repeats); `time.perf_counter` around every call on the CPU, where a call returns only once its
  work is done (the `synchronize` below is then a no-op).
- Warm-up: the first call is timed on its own and never counted (Triton compiles and autotunes
  there); then warm-up calls run until the median of the last `window` calls is within `tol` of the
  median of the `window` before (or a fixed number, if `warmup` is given), bounded by `max_warmup`.
- Statistics: median and inter-quartile range (q75 - q25, numpy's linear interpolation) of many
  timed repeats, each repeat one call.
- Inputs: callers pre-generate several random (not zero) input sets; call i reads set i mod n, so
  no call finds its inputs hot in cache from the call before (`n_input_sets` sizes n so that the
  rotated sets exceed the L2 cache).
- Peak memory of one call, as "the call's inputs + the most it holds allocated at once above what
  was allocated before it":
  * GPU: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus the baseline
    (method "cuda_max_allocated");
  * CPU: a TorchDispatchMode sees every aten op's output storages and follows their lifetimes
    through weak references (method "torch_dispatch_live"): exact at aten-op granularity for
    tensors, blind to scratch memory inside one op (e.g. LAPACK workspaces) and to non-tensor
    Python objects. Not RSS: the CPU allocator's caching makes RSS deltas meaningless at this size.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MEM_METHOD_CUDA = "cuda_max_allocated"
MEM_METHOD_CPU = "torch_dispatch_live"


def device_label(device) -> str:
    """'cuda' or 'cpu' (the device column and the file-name tag; GPU and CPU never mix)."""
    return torch.device(device).type


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` intra-op CPU threads (None: leave as is), restoring the count after.
    On a shared or small machine fewer threads than cores avoid OpenMP barrier stalls that
    otherwise dominate CPU timings."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def release_cuda_memory(device) -> None:
    """Hand cached GPU blocks back after a failed shape; a broken CUDA context must not end a run."""
    if torch.device(device).type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()


def _call(fn: Callable, args):
    if isinstance(args, dict):
        return fn(**args)
    if isinstance(args, (tuple, list)):
        return fn(*args)
    return fn(args)


# ---------------------------------------------------------------------------------------------
# statistics and the warm-up rule (pure functions, tested on CPU)

@dataclass
class TimingResult:
    times_ms: list[float]            # the timed repeats, in call order
    first_call_ms: float             # the first call (compilation / autotuning), never in the stats
    warmup_ms: list[float] = field(default_factory=list)
    median_ms: float = math.nan
    iqr_ms: float = math.nan
    q25_ms: float = math.nan
    q75_ms: float = math.nan
    mean_ms: float = math.nan
    min_ms: float = math.nan
    clock: str = ""                  # 'cuda_events' | 'perf_counter'

    def __post_init__(self):
        if self.times_ms:
            stats = summarize(self.times_ms)
            for key, value in stats.items():
                setattr(self, key, value)

    @property
    def n_repeats(self) -> int:
        return len(self.times_ms)

    @property
    def n_warmup(self) -> int:
        return len(self.warmup_ms)

    def row(self) -> dict:
        """The scalar fields a result row carries."""
        d = asdict(self)
        d.pop("times_ms"), d.pop("warmup_ms")
        d.update(n_repeats=self.n_repeats, n_warmup=self.n_warmup)
        return d


def summarize(times_ms: Sequence[float]) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings to summarise")
    q25, med, q75 = np.percentile(t, [25, 50, 75])
    return {"median_ms": float(med), "iqr_ms": float(q75 - q25), "q25_ms": float(q25),
            "q75_ms": float(q75), "mean_ms": float(t.mean()), "min_ms": float(t.min())}


def warmed_up(times_ms: Sequence[float], window: int = 5, tol: float = 0.05) -> bool:
    """True once the median of the last `window` warm-up calls is within `tol` (relative) of the
    median of the `window` calls before them."""
    if len(times_ms) < 2 * window:
        return False
    last = float(np.median(times_ms[-window:]))
    before = float(np.median(times_ms[-2 * window:-window]))
    return abs(last - before) <= tol * max(before, 1e-12)


# ---------------------------------------------------------------------------------------------
# the timer

class _Clock:
    """Times single calls; `finish()` returns their durations in ms (synchronising once on GPU)."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.name = "cuda_events" if self.cuda else "perf_counter"
        self._pending: list = []

    def time(self, fn, args):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = _call(fn, args)
            end.record()
            self._pending.append((start, end))
        else:
            t0 = time.perf_counter()
            out = _call(fn, args)
            self._pending.append(time.perf_counter() - t0)
        return out

    def finish(self) -> list[float]:
        if self.cuda:
            synchronize(self.device)
            ms = [s.elapsed_time(e) for s, e in self._pending]
        else:
            ms = [s * 1e3 for s in self._pending]
        self._pending = []
        return ms


def time_fn(fn: Callable, inputs: Sequence, *, device="cpu", repeats: int = 30, warmup: int | None = None,
            min_warmup: int = 3, max_warmup: int = 50, window: int = 5, tol: float = 0.05,
            max_seconds: float | None = None) -> TimingResult:
    """Time `fn` called on `inputs[i % len(inputs)]` (a tuple of args, a dict of kwargs, or one arg).

    `warmup=None`: warm up until `warmed_up(window, tol)` holds, at least `min_warmup` and at most
    `max_warmup` calls after the first call; `warmup=N`: exactly N calls. `max_seconds` (optional)
    caps the timed repeats' wall time (at least 3 repeats always run).
    """
    if not inputs:
        raise ValueError("time_fn needs at least one input set")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n = len(inputs)
    clock = _Clock(device)
    i = 0
    synchronize(device)
    with torch.inference_mode():
        clock.time(fn, inputs[i % n]); i += 1
        first = clock.finish()[0]

        warm: list[float] = []
        target = warmup if warmup is not None else max_warmup
        while len(warm) < target:
            # on GPU, time warm-up calls in small groups: one sync per group, not per call
            group = min(window, target - len(warm))
            for _ in range(group):
                clock.time(fn, inputs[i % n]); i += 1
            warm += clock.finish()
            if warmup is None and len(warm) >= min_warmup and warmed_up(warm, window, tol):
                break

        t_start = time.perf_counter()
        for r in range(repeats):
            clock.time(fn, inputs[i % n]); i += 1
            if max_seconds is not None and r >= 2 and time.perf_counter() - t_start > max_seconds:
                break
        times = clock.finish()
    return TimingResult(times_ms=times, first_call_ms=first, warmup_ms=warm, clock=clock.name)


# ---------------------------------------------------------------------------------------------
# memory

def tensor_bytes(obj) -> int:
    """Bytes of the distinct storages behind the tensors in a (nested) structure."""
    seen, total = set(), 0
    for leaf in tree_leaves(obj):
        if isinstance(leaf, torch.Tensor):
            storage = leaf.untyped_storage()
            key = (storage.device, storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
    return total


class LiveTensorMemory(TorchDispatchMode):
    """Tracks the bytes of tensor storages created inside the mode, and their peak.

    Storages are keyed by data pointer and released when their weak reference expires (checked
    before each op), so views and in-place ops add nothing and freed temporaries stop counting.
    """

    def __init__(self):
        super().__init__()
        self.live: dict = {}   # key -> (StorageWeakRef, nbytes)
        self.current = 0
        self.peak = 0

    def _sweep(self):
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._sweep()
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and not leaf.is_meta:
                storage = leaf.untyped_storage()
                key = (str(storage.device), storage.data_ptr())
                if key not in self.live and storage.nbytes() > 0:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_memory(fn: Callable, args, device="cpu") -> tuple[int, str]:
    """(bytes, method): inputs of one call + the peak it allocates above the pre-call baseline."""
    inputs = tensor_bytes(args)
    if torch.device(device).type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            out = _call(fn, args)
            synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak + inputs), MEM_METHOD_CUDA
    tracker = LiveTensorMemory()
    with torch.inference_mode(), tracker:
        out = _call(fn, args)
    del out
    return int(tracker.peak + inputs), MEM_METHOD_CPU


def l2_cache_bytes(device) -> int:
    """The GPU's L2 size (0 on CPU or when unknown)."""
    if torch.device(device).type != "cuda":
        return 0
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0) or 0)


def n_input_sets(bytes_per_set: int, device, minimum: int = 3, maximum: int = 16) -> int:
    """How many input sets to rotate so that together they exceed twice the L2 cache."""
    l2 = l2_cache_bytes(device)
    need = math.ceil(2 * l2 / max(bytes_per_set, 1)) + 1 if l2 else minimum
    return int(min(max(need, minimum), maximum))


__all__ = ["TimingResult", "time_fn", "summarize", "warmed_up", "peak_memory", "tensor_bytes",
           "LiveTensorMemory", "n_input_sets", "l2_cache_bytes", "synchronize", "device_label",
           "torch_threads", "release_cuda_memory", "MEM_METHOD_CUDA", "MEM_METHOD_CPU"]
