"""Op-level benchmark: one delta-rule kernel call per shape, over a grid of key dimensions.

Phases
- prefill: the chunked kernel over T tokens (fla `chunk_delta_rule` / `chunk_gated_delta_rule`);
- decode: one token with a given recurrent state (fla `fused_recurrent_*`, T = 1,
  initial_state in, final state out), what a model's decode step calls.
Both are called exactly as fla's DeltaNet / GatedDeltaNet layers call them (q/k L2-normalised in
the kernel; GDN: raw gate + A_log/dt_bias in kernel, raw beta + sigmoid in kernel, value-first
state), on random (not zero) inputs.

Impls: 'fla' (Triton, CUDA only) and 'torch' (lapr's CPU backend `lapr.backends.delta_rule`, which
stands in for both fla entry points on a CPU; it also runs on CUDA as a reference).

Row columns: level ('op'), family, impl, device, device_name, dtype, phase, B, T (1 for decode),
H, d_k, d_v, ms_median, ms_iqr, ms_q25, ms_q75, tokens_per_s (B*T / median), peak_mem_bytes,
mem_method, state_bytes (float32 state of the whole batch, B*H*d_k*d_v*4, what one call reads and
writes), n_repeats, n_warmup, first_call_ms, clock, error (empty when the shape ran).
"""
from __future__ import annotations

import itertools
import math
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from lapr.bench import timing

FAMILIES = ("delta_net", "gated_deltanet")
PHASES = ("prefill", "decode")
IMPLS = ("fla", "torch")
DEFAULT_D_K = (128, 112, 96, 80, 64, 48, 32, 16)
STATE_DTYPE = torch.float32  # fla keeps recurrent states in float32

COLUMNS = ["level", "family", "impl", "device", "device_name", "dtype", "phase", "B", "T", "H", "d_k",
           "d_v", "ms_median", "ms_iqr", "ms_q25", "ms_q75", "tokens_per_s", "peak_mem_bytes",
           "mem_method", "state_bytes", "n_repeats", "n_warmup", "first_call_ms", "clock", "error"]

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

    kw = {"q": randn(B, T, H, K), "k": randn(B, T, H, K), "v": randn(B, T, H, V)}
    if shape.family == "delta_net":
        # post-sigmoid beta in (0, 1), as the layer passes it
        kw["beta"] = torch.rand(B, T, H, generator=g, device=device).clamp_min(1e-3).to(dtype)
    else:
        kw["g"] = randn(B, T, H)                   # raw a_proj output
        kw["beta"] = randn(B, T, H)                # raw b_proj output (sigmoid in kernel)
        kw["A_log"] = torch.empty(H, device=device).uniform_(0, math.log(16), generator=g)
        kw["dt_bias"] = randn(H, scale=0.1, dt=torch.float32)
    if shape.phase == "decode":
        state = randn(B, H, K, V, scale=0.1, dt=STATE_DTYPE)
        # GDN layers keep the state value-first ([B, H, d_v, d_k])
        kw["initial_state"] = state.transpose(-1, -2).contiguous() if shape.family == "gated_deltanet" else state
    return kw


def kernel(family: str, phase: str, impl: str) -> Callable:
    """fn(**make_inputs(...)) -> (o, final_state), called the way fla's layers call it."""
    if impl == "torch":
        from lapr.backends.delta_rule import delta_rule as chunked

        base = chunked
    elif impl == "fla":
        if family == "delta_net":
            from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
            base = chunk_delta_rule if phase == "prefill" else fused_recurrent_delta_rule
        else:
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
            base = chunk_gated_delta_rule if phase == "prefill" else fused_recurrent_gated_delta_rule
    else:
        raise ValueError(f"unknown impl {impl!r}; known: {list(IMPLS)}")
    # output_final_state=True in both phases: a prefill fills the cache, a decode step hands its state on
    if family == "delta_net":
        def fn(q, k, v, beta, initial_state=None):
            return base(q=q, k=k, v=v, beta=beta, initial_state=initial_state,
                        output_final_state=True, use_qk_l2norm_in_kernel=True)
    elif family == "gated_deltanet":
        def fn(q, k, v, g, beta, A_log, dt_bias, initial_state=None):
            return base(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state,
                        output_final_state=True, use_qk_l2norm_in_kernel=True,
                        use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias,
                        use_beta_sigmoid_in_kernel=True, state_v_first=True)
    else:
        raise ValueError(f"unknown family {family!r}; known: {list(FAMILIES)}")
    return fn


def default_impls(device) -> list[str]:
    return ["fla"] if timing.device_label(device) == "cuda" else ["torch"]


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
                **timing_kw) -> dict:
    """One row: time `impl` on `shape` (see the module doc for the columns)."""
    dtype = dtype or default_dtype(device)
    row = base_row(shape, impl, device, dtype)
    fn = kernel(shape.family, shape.phase, impl)
    first = make_inputs(shape, device, dtype, seed)
    n = n_inputs or timing.n_input_sets(timing.tensor_bytes(first), device)
    inputs = [first] + [make_inputs(shape, device, dtype, seed + i) for i in range(1, n)]
    return {**row, **measure(fn, inputs, shape.tokens, device, **timing_kw)}


def measure(fn: Callable, inputs: list, tokens: int, device, **timing_kw) -> dict:
    """Time `fn` over the rotated `inputs` and take one call's peak memory: the measured columns
    of a row (`tokens` per call gives tokens_per_s)."""
    res = timing.time_fn(fn, inputs, device=device, **{**TIMING_DEFAULTS, **timing_kw})
    peak, method = timing.peak_memory(fn, inputs[0], device)
    return {"ms_median": res.median_ms, "ms_iqr": res.iqr_ms, "ms_q25": res.q25_ms, "ms_q75": res.q75_ms,
            "tokens_per_s": tokens / (res.median_ms / 1e3), "peak_mem_bytes": peak, "mem_method": method,
            "n_repeats": res.n_repeats, "n_warmup": res.n_warmup, "first_call_ms": res.first_call_ms,
            "clock": res.clock}


def error_text(exc: BaseException) -> str:
    """The error column of a failed row: exception type and first line of its message."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def base_row(shape: Shape, impl: str, device, dtype, error: str = "") -> dict:
    """The columns a row has whether or not the shape ran."""
    return {"level": "op", **asdict(shape), "impl": impl, "device": timing.device_label(device),
            "device_name": device_name(device), "dtype": str(dtype).removeprefix("torch."),
            "state_bytes": shape.state_bytes(), "error": error}


def run_grid(shapes: Iterable[Shape], impls: Iterable[str], device="cpu", dtype=None, seed: int = 0,
             n_inputs: int | None = None, log=print, on_progress: Callable[[list[dict]], None] | None = None,
             deadline: float | None = None, **timing_kw) -> list[dict]:
    """Bench every (shape, impl); a failing shape becomes a row with `error` set, never a crash.
    `deadline` (time.monotonic() value): shapes not started by then are recorded as skipped."""
    dtype = dtype or default_dtype(device)
    jobs = [(s, i) for s in shapes for i in impls]
    rows = []
    for j, (shape, impl) in enumerate(jobs, 1):
        t0 = time.monotonic()
        if deadline is not None and t0 > deadline:
            row = base_row(shape, impl, device, dtype, "skipped: time budget exhausted")
        else:
            try:
                row = bench_shape(shape, impl, device, dtype, seed, n_inputs, **timing_kw)
            except Exception as exc:  # noqa: BLE001 — one bad shape must not end the grid
                row = base_row(shape, impl, device, dtype, error_text(exc))
                log(traceback.format_exc(limit=3))
                timing.release_cuda_memory(device)
        rows.append(row)
        status = row["error"] or (f"{row['ms_median']:.4f} ms (IQR {row['ms_iqr']:.4f}), "
                                  f"{row['tokens_per_s']:.3g} tok/s, peak {row['peak_mem_bytes'] / 2**20:.1f} MiB, "
                                  f"first call {row['first_call_ms'] / 1e3:.2f} s")
        log(f"[op {j}/{len(jobs)}] {shape.family} {shape.phase} {impl} B={shape.B} T={shape.T} H={shape.H} "
            f"d_k={shape.d_k} d_v={shape.d_v}: {status} ({time.monotonic() - t0:.1f} s)")
        if on_progress is not None:
            on_progress(rows)
    return rows


__all__ = ["Shape", "expand_grid", "d_k_values", "make_inputs", "kernel", "bench_shape", "run_grid",
           "COLUMNS", "FAMILIES", "PHASES", "IMPLS", "DEFAULT_D_K", "GRID_DEFAULTS", "default_impls",
           "default_dtype", "device_name", "error_text", "measure"]
