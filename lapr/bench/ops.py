"""Op-level benchmark: one delta-rule kernel call per shape, over a grid of key dimensions.

Phases
- prefill: the chunked kernel over T tokens (fla `chunk_delta_rule` / `chunk_gated_delta_rule`);
- decode: one token with a given recurrent state (fla `fused_recurrent_*`, T = 1,
  initial_state in, final state out), what a model's decode step calls.
Each is called exactly as the family's fla layer calls it (the family's `op_inputs` / `op_kernel`,
lapr/models: e.g. q/k L2-normalised in the kernel; GDN: raw gate + A_log/dt_bias in kernel, raw
beta + sigmoid in kernel, value-first state; GLA: a key-wise log decay), on random (not zero) inputs.

Impls: 'fla' (Triton, CUDA only) and 'torch' (lapr's CPU backend `lapr.backends.delta_rule`, which
stands in for both fla entry points on a CPU; it also runs on CUDA as a reference).

Decode modes (`decode_mode` column): 'eager' launches the kernel from Python on every call, as
before (on a GPU its time includes the host's launch overhead, which at decode sizes is most of it);
'graph' captures the step once in a CUDA graph with static inputs and a static state buffer (the new
state copied back into it inside the graph) and times replays: the step's device time, what a
serving engine pays (lapr.bench.graph_decode). Prefill rows are always 'eager'. 'graph' needs CUDA.

Row columns: level ('op'), family, impl, device, device_name, dtype, phase, B, T (1 for decode),
H, d_k, d_v, ms_median, ms_iqr, ms_q25, ms_q75, tokens_per_s (B*T / median), peak_mem_bytes,
mem_method, state_bytes (float32 state of the whole batch, B*H*d_k*d_v*4, what one call reads and
writes), n_repeats, n_warmup, first_call_ms, clock, error (empty when the shape ran), then
decode_mode, state_bytes_read (decode rows: the state the kernel reads once per step = state_bytes;
it writes as many bytes back), achieved_gbps (decode rows: 2 * state_bytes_read / median time, the
state's one read + one write, in GB/s = 1e9 B/s; q/k/v/o traffic, (2 d_k + 2 d_v) bf16 per head, is
left out, and so is the graph's copy-back of the new state into the static buffer, which moves the
same bytes again: the column is the bandwidth an in-place kernel would need), peak_gbps (nominal
HBM bandwidth of the device, empty where unknown), roofline_frac (achieved_gbps / peak_gbps),
host_ms (graph rows: host time to launch one replay; a step's steady-state time is about
max(ms_median, host_ms)), d_k_unpruned (the d_k the row's d_k was pruned from, where known).
"""
from __future__ import annotations

import itertools
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from lapr import families
from lapr.bench import timing
from lapr.bench.tables import TIMING

FAMILIES = families.names()  # every family lapr adapts (lapr/models), read without importing fla
PHASES = ("prefill", "decode")
IMPLS = ("fla", "torch")
DEFAULT_D_K = (128, 112, 96, 80, 64, 48, 32, 16)
STATE_DTYPE = torch.float32  # fla keeps recurrent states in float32

DECODE_MODES = ("graph", "eager")
COLUMNS = ["level", "family", "impl", "device", "device_name", "dtype", "phase", "B", "T", "H", "d_k",
           "d_v", "ms_median", "ms_iqr", "ms_q25", "ms_q75", "tokens_per_s", "peak_mem_bytes",
           "mem_method", "state_bytes", "n_repeats", "n_warmup", "first_call_ms", "clock", "error",
           "decode_mode", "state_bytes_read", "achieved_gbps", "peak_gbps", "roofline_frac", "host_ms",
           "d_k_unpruned"]
# Nominal (spec-sheet) HBM bandwidth, GB/s, by a substring of torch.cuda.get_device_name; first match
# wins. The roofline column is relative to these; a measured device-to-device copy on an H200 here
# reached ~4300 GB/s (read + write), ~90 % of nominal (the lending workplace's record of its H200s,
# 2026-10/11; not a lapr run).
PEAK_GBPS = [("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0),
             ("GH200", 4000.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0)]

# Grid defaults. GPU: the shapes of the paper's single-layer table; CPU: small enough for the
# embedded DAG on a laptop (the CPU backend runs one Python loop step per 64-token chunk).
GRID_DEFAULTS = {
    "cuda": {"B": [8], "T": [4096], "H": [16], "d_v": [128]},
    "cpu": {"B": [1], "T": [256], "H": [4], "d_v": [64]},
}
TIMING_DEFAULTS = {"repeats": 50, "warmup": None, "min_warmup": 3, "max_warmup": 50}


@dataclass(frozen=True)
class Shape:
    family: str
    phase: str
    B: int
    T: int
    H: int
    d_k: int
    d_v: int

    @property
    def tokens(self) -> int:
        return self.B * self.T

    def state_bytes(self) -> int:
        return self.B * self.H * self.d_k * self.d_v * STATE_DTYPE.itemsize


def int_list(settings: dict, key: str, default) -> list[int]:
    value = settings.get(key, default)
    values = [value] if isinstance(value, (int, float)) else list(value)
    if not values:
        raise ValueError(f"bench settings: {key!r} must not be empty")
    out = []
    for v in values:
        if isinstance(v, bool) or int(v) != v or int(v) < 1:
            raise ValueError(f"bench settings: {key!r} must hold positive integers, got {v!r}")
        out.append(int(v))
    return out


def str_list(settings: dict, key: str, default, allowed) -> list[str]:
    value = settings.get(key, default)
    values = [value] if isinstance(value, str) else list(value)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"bench settings: {key!r} must be a non-empty subset of {list(allowed)}, got {values!r}")
    return list(dict.fromkeys(values))


def d_k_values(settings: dict) -> list[int]:
    """The d_k grid: `d_k` (default 128..16) plus `extra_d_k` (e.g. every d_k the pruning grid
    produces), distinct, largest first."""
    base = int_list(settings, "d_k", DEFAULT_D_K)
    extra = int_list(settings, "extra_d_k", None) if settings.get("extra_d_k") else []
    return sorted(set(base) | set(extra), reverse=True)


def expand_grid(settings: dict, device="cpu") -> list[Shape]:
    """Every (family, phase, B, T, H, d_k, d_v) the settings ask for, in a stable order.

    Keys: families, phases, d_k, extra_d_k, B, T, H, d_v (int or list; defaults per device in
    GRID_DEFAULTS). Decode shapes take one token whatever T is, so they are listed once with T = 1.
    Order: family, phase, then (B, T, H, d_v), then d_k descending.
    """
    defaults = GRID_DEFAULTS[timing.device_label(device)]
    families = str_list(settings, "families", FAMILIES, FAMILIES)
    phases = str_list(settings, "phases", PHASES, PHASES)
    dims = {k: int_list(settings, k, defaults[k]) for k in ("B", "T", "H", "d_v")}
    d_ks = d_k_values(settings)
    shapes: dict[Shape, None] = {}
    for family, phase in itertools.product(families, phases):
        for B, T, H, d_v in itertools.product(dims["B"], dims["T"], dims["H"], dims["d_v"]):
            for d_k in d_ks:
                shapes[Shape(family, phase, B, 1 if phase == "decode" else T, H, d_k, d_v)] = None
    return list(shapes)


# ---------------------------------------------------------------------------------------------
# inputs and kernels

def make_inputs(shape: Shape, device="cpu", dtype=torch.float32, seed: int = 0) -> dict:
    """Random kwargs for one call, shaped as the fla layers pass them (see the module doc).
    Generated on `device` (a device generator: no host-to-device copies of large inputs)."""
    g = torch.Generator(device=device).manual_seed(seed)
    B, T, H, K, V = shape.B, shape.T, shape.H, shape.d_k, shape.d_v

    def randn(*size, scale=1.0, dt=dtype):
        x = torch.randn(*size, generator=g, device=device, dtype=torch.float32)
        return (x * scale).to(dt) if scale != 1.0 or dt != torch.float32 else x

    fam = _family(shape.family)
    kw = {"q": randn(B, T, H, K), "k": randn(B, T, H, K), "v": randn(B, T, H, V)}
    kw.update(fam.op_inputs(B, T, H, K, V, g, device, dtype, randn))  # the family's gates, as its layer passes them
    if shape.phase == "decode":
        state = randn(B, H, K, V, scale=0.1, dt=STATE_DTYPE)
        # layers that keep the state value-first ([B, H, d_v, d_k]: GDN, GLA) get it so
        kw["initial_state"] = state.transpose(-1, -2).contiguous() if fam.state_v_first else state
    return kw


def _family(name: str):
    from lapr.models import FAMILIES

    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def kernel(family: str, phase: str, impl: str) -> Callable:
    """fn(**make_inputs(...)) -> (o, final_state), called the way fla's layers call it."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; known: {list(IMPLS)}")
    # output_final_state=True in both phases: a prefill fills the cache, a decode step hands its state on
    return _family(family).op_kernel(phase, impl)


def default_impls(device) -> list[str]:
    return ["fla"] if timing.device_label(device) == "cuda" else ["torch"]


def default_decode_modes(device) -> list[str]:
    """Both modes on CUDA (graph first: the number serving sees), eager alone elsewhere."""
    return list(DECODE_MODES) if timing.device_label(device) == "cuda" else ["eager"]


def decode_modes_for(device, modes=None) -> list[str]:
    """`modes` checked (default per device); 'graph' refused without CUDA."""
    modes = str_list({"decode_modes": modes} if modes is not None else {}, "decode_modes",
                     default_decode_modes(device), DECODE_MODES)
    if "graph" in modes and timing.device_label(device) != "cuda":
        raise ValueError("bench settings: decode mode 'graph' needs CUDA (CUDA graphs); use ['eager'] on CPU")
    return modes


def peak_gbps(name: str) -> float | None:
    """Nominal memory bandwidth (GB/s) of a device name from PEAK_GBPS, None where unknown."""
    for key, gbps in PEAK_GBPS:
        if key.lower() in str(name).lower():
            return gbps
    return None


def bandwidth_columns(state_bytes_read: int, ms_median: float, device_name_: str) -> dict:
    """state_bytes_read, achieved_gbps (one read + one write of the state per step), peak_gbps and
    roofline_frac of a decode row."""
    achieved = 2 * state_bytes_read / (ms_median * 1e-3) / 1e9 if ms_median and ms_median > 0 else None
    peak = peak_gbps(device_name_)
    return {"state_bytes_read": state_bytes_read, "achieved_gbps": achieved, "peak_gbps": peak,
            "roofline_frac": achieved / peak if achieved is not None and peak else None}


def default_dtype(device) -> torch.dtype:
    # fla's DeltaNet chunk kernel refuses float32; the CPU backend computes in float32 anyway
    return torch.bfloat16 if timing.device_label(device) == "cuda" else torch.float32


def device_name(device) -> str:
    if timing.device_label(device) == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------
# the benchmark

def bench_shape(shape: Shape, impl: str, device="cpu", dtype=None, seed: int = 0, n_inputs: int | None = None,
                decode_mode: str = "eager", capture: bool | None = None, d_k_unpruned: int | None = None,
                **timing_kw) -> dict:
    """One row: time `impl` on `shape` (see the module doc for the columns).

    decode_mode 'graph' (decode shapes only): one CUDA graph per rotated input set, replays timed
    (lapr.bench.graph_decode.bench_op_graph). `capture=False` runs the same static-buffer path
    without a graph (tests on CPU); None: capture on CUDA.
    """
    dtype = dtype or default_dtype(device)
    mode = check_decode_mode(shape, decode_mode)
    row = base_row(shape, impl, device, dtype, decode_mode=mode, d_k_unpruned=d_k_unpruned)
    if mode == "graph":
        from lapr.bench import graph_decode

        measured = graph_decode.bench_op_graph(shape, impl, device, dtype, seed, n_inputs, capture=capture,
                                               **timing_kw)
    else:
        fn = kernel(shape.family, shape.phase, impl)
        first = make_inputs(shape, device, dtype, seed)
        n = n_inputs or timing.n_input_sets(timing.tensor_bytes(first), device)
        inputs = [first] + [make_inputs(shape, device, dtype, seed + i) for i in range(1, n)]
        measured = measure(fn, inputs, shape.tokens, device, **timing_kw)
    row.update(measured)
    if shape.phase == "decode":
        row.update(bandwidth_columns(shape.state_bytes(), row["ms_median"], row["device_name"]))
    return row


def check_decode_mode(shape: Shape, decode_mode: str) -> str:
    if decode_mode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {decode_mode!r}; known: {list(DECODE_MODES)}")
    if shape.phase != "decode":
        return "eager"          # prefill is launched eagerly whatever the decode mode
    return decode_mode


def measure(fn: Callable, inputs: list, tokens: int, device, **timing_kw) -> dict:
    """Time `fn` over the rotated `inputs` and take one call's peak memory: the measured columns
    of a row (`tokens` per call gives tokens_per_s)."""
    res = timing.time_fn(fn, inputs, device=device, **{**TIMING_DEFAULTS, **timing_kw})
    return measured_columns(res, tokens, *timing.peak_memory(fn, inputs[0], device))


def measured_columns(res: timing.TimingResult, tokens: int, peak_bytes, mem_method: str) -> dict:
    """A row's measured columns from a timing result (eager calls or graph replays)."""
    return {"ms_median": res.median_ms, "ms_iqr": res.iqr_ms, "ms_q25": res.q25_ms, "ms_q75": res.q75_ms,
            "tokens_per_s": tokens / (res.median_ms / 1e3), "peak_mem_bytes": peak_bytes, "mem_method": mem_method,
            "n_repeats": res.n_repeats, "n_warmup": res.n_warmup, "first_call_ms": res.first_call_ms,
            "clock": res.clock, TIMING: res}


def pooled(rows: list[dict]) -> dict:
    """One shape's rows of several rounds as one row: the first round's row with the timing columns
    of all rounds' calls together (first_call_ms and peak memory stay the first round's); the first
    failed round's row if any failed."""
    failed = [r for r in rows if r["error"]]
    if failed:
        return failed[0]
    first, runs = rows[0], [r[TIMING] for r in rows]
    merged = timing.TimingResult(times_ms=[t for x in runs for t in x.times_ms], first_call_ms=runs[0].first_call_ms,
                                 warmup_ms=[t for x in runs for t in x.warmup_ms], clock=runs[0].clock)
    out = {**first, **measured_columns(merged, first["B"] * first["T"], first["peak_mem_bytes"], first["mem_method"]),
           "first_call_ms": first["first_call_ms"]}  # as the first round's row says (graph decode: the build)
    if first["phase"] == "decode":
        out.update(bandwidth_columns(first["state_bytes"], out["ms_median"], first["device_name"]))
    return out


def error_text(exc: BaseException) -> str:
    """The error column of a failed row: exception type and first line of its message."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def base_row(shape: Shape, impl: str, device, dtype, error: str = "", decode_mode: str = "eager",
             d_k_unpruned: int | None = None) -> dict:
    """The columns a row has whether or not the shape ran."""
    return {"level": "op", **asdict(shape), "impl": impl, "device": timing.device_label(device),
            "device_name": device_name(device), "dtype": str(dtype).removeprefix("torch."),
            "state_bytes": shape.state_bytes(), "error": error,
            "decode_mode": decode_mode if shape.phase == "decode" else "eager",
            "state_bytes_read": shape.state_bytes() if shape.phase == "decode" else None,
            "achieved_gbps": None, "peak_gbps": None, "roofline_frac": None, "host_ms": None,
            "d_k_unpruned": d_k_unpruned}


def run_grid(shapes: Iterable[Shape], impls: Iterable[str], device="cpu", dtype=None, seed: int = 0,
             n_inputs: int | None = None, log=print, on_progress: Callable[[list[dict]], None] | None = None,
             deadline: float | None = None, decode_modes: Iterable[str] | None = None,
             d_k_unpruned: int | None = None, rounds: int = 1, **timing_kw) -> list[dict]:
    """Bench every (shape, impl) and, for decode shapes, every decode mode (default per device:
    graph and eager on CUDA, eager on CPU); a failing shape becomes a row with `error` set, never a
    crash. `deadline` (time.monotonic() value): shapes not started by then are recorded as skipped.
    `d_k_unpruned` fills that column of every row (None: unknown).

    `rounds` > 1: the whole grid is timed that many times in turn, each shape taking its share of
    `repeats` per round (warm-up again each round), and each row pools its rounds' calls (`pooled`).
    A slow spell of the machine then falls on every shape alike instead of on the shapes timed during
    it, and the ratios between shapes (claim A3: time at d_k / time at d_k / 2) stay put: two embedded
    runs timed in one pass per shape measured GDN's prefill ratio at 1.42x and 2.77x, the second with
    only its first shape (d_k 128) slow, 36.2 ms against 18.8 ms, and the other d_k within 7 %."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    dtype = dtype or default_dtype(device)
    modes = decode_modes_for(device, decode_modes)
    jobs = [(s, i, m) for s in shapes for i in impls for m in (modes if s.phase == "decode" else ["eager"])]
    if rounds > 1:
        total = timing_kw.pop("repeats", TIMING_DEFAULTS["repeats"])
        share = [total // rounds + (r < total % rounds) for r in range(rounds)]
        runs = []
        for r, repeats in enumerate(share):
            if repeats:
                log(f"[op round {r + 1}/{rounds}] {repeats} timed calls per shape")
                runs.append(_run_jobs(jobs, device, dtype, seed, n_inputs, log, None, deadline, d_k_unpruned,
                                      repeats=repeats, **timing_kw))
        rows = [pooled(list(shape_rows)) for shape_rows in zip(*runs)]
        if on_progress is not None:
            on_progress(rows)
    else:
        rows = _run_jobs(jobs, device, dtype, seed, n_inputs, log, on_progress, deadline, d_k_unpruned,
                         **timing_kw)
    return [{k: v for k, v in row.items() if k != TIMING} for row in rows]


def _run_jobs(jobs, device, dtype, seed, n_inputs, log, on_progress, deadline, d_k_unpruned, **timing_kw):
    """One timed pass over the grid's jobs (run_grid)."""
    rows = []
    for j, (shape, impl, mode) in enumerate(jobs, 1):
        t0 = time.monotonic()
        extra = {"decode_mode": mode, "d_k_unpruned": d_k_unpruned}
        if deadline is not None and t0 > deadline:
            row = base_row(shape, impl, device, dtype, "skipped: time budget exhausted", **extra)
        else:
            try:
                row = bench_shape(shape, impl, device, dtype, seed, n_inputs, **extra, **timing_kw)
            except Exception as exc:  # noqa: BLE001 — one bad shape must not end the grid
                row = base_row(shape, impl, device, dtype, error_text(exc), **extra)
                log(traceback.format_exc(limit=3))
                timing.release_cuda_memory(device)
        rows.append(row)
        status = row["error"] or (f"{row['ms_median']:.4f} ms (IQR {row['ms_iqr']:.4f}), "
                                  f"{row['tokens_per_s']:.3g} tok/s, peak {row['peak_mem_bytes'] / 2**20:.1f} MiB, "
                                  f"first call {row['first_call_ms'] / 1e3:.2f} s"
                                  + (f", {row['achieved_gbps']:.0f} GB/s" if row.get("achieved_gbps") else ""))
        label = f"{shape.phase}[{mode}]" if shape.phase == "decode" else shape.phase
        log(f"[op {j}/{len(jobs)}] {shape.family} {label} {impl} B={shape.B} T={shape.T} H={shape.H} "
            f"d_k={shape.d_k} d_v={shape.d_v}: {status} ({time.monotonic() - t0:.1f} s)")
        if on_progress is not None:
            on_progress(rows)
    return rows


__all__ = ["Shape", "expand_grid", "d_k_values", "make_inputs", "kernel", "bench_shape", "run_grid",
           "COLUMNS", "FAMILIES", "PHASES", "IMPLS", "DEFAULT_D_K", "GRID_DEFAULTS", "default_impls",
           "default_dtype", "device_name", "error_text", "measure", "measured_columns", "DECODE_MODES", "default_decode_modes",
           "decode_modes_for", "peak_gbps", "bandwidth_columns", "PEAK_GBPS", "check_decode_mode", "pooled",
           "TIMING"]
