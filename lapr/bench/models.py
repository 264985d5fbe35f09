"""Model-level benchmark: prefill and cached decode throughput, peak memory and state memory.

- prefill: one forward over random token ids [B, T] with `use_cache=True` (the cache a generation
  starts from) and `logits_to_keep=1` (as generation does; full-sequence logits would time the LM
  head, not the attention). tokens/s = B*T / median.
- decode: a prompt of `prompt_len` tokens fills the recurrent cache, then every timed call is one
  step: one token per sequence through `model(ids[B, 1], past_key_values=cache, use_cache=True)`;
  the cache carries on from step to step as in generation. tokens/s = B / median step time.
- decode modes (`decode_mode`): 'eager' as above (per-step time includes the host's launch overhead
  of every kernel of the step); 'graph' (CUDA only) captures the whole step once with static cache
  buffers (lapr.bench.graph_decode.GraphDecoder) and times replays: the step's device time, as a
  serving engine decodes. Each mode starts from its own prompt-filled cache.
- state memory per sequence: analytic, from `lapr.models.family(model).attention(model)` state_bytes
  (float32, as fla keeps states) summed over layers (`state_bytes_per_seq`); measured, every tensor in
  the fla cache after the prompt (recurrent states + short-conv states) / B (`cache_bytes_per_seq`).
Rows share the op-level columns (level 'model', T = 1 for decode; decode_mode, state_bytes_read =
the whole batch's recurrent state over all layers, read once and written once per step, and
achieved_gbps = 2 * state_bytes_read / step time, see lapr.bench.ops) plus model, method, ratio,
num_layers, hidden_size, prompt_len, state_bytes_per_seq, cache_bytes_per_seq, weight_bytes (the
parameters' bytes, which a decode step also reads: at small B they, not the state, dominate the
step's traffic); `state_bytes` is the whole batch's state over all layers. d_k_unpruned: the
checkpoint's d_k before pruning (pruning.json's d_k_before; the model's own d_k for method 'none').
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

import torch

from lapr import backends
from lapr.bench import ops, timing

MODEL_COLUMNS = ops.COLUMNS + ["model", "method", "ratio", "num_layers", "hidden_size", "prompt_len",
                               "state_bytes_per_seq", "cache_bytes_per_seq", "weight_bytes"]
MODEL_DEFAULTS = {
    "cuda": {"prefill_batch": [8], "prefill_len": [2048], "decode_batch": [1, 32], "prompt_len": 64,
             "repeats": 50},
    "cpu": {"prefill_batch": [1], "prefill_len": [128], "decode_batch": [1], "prompt_len": 16,
            "repeats": 20},
}


def describe(model) -> dict:
    """Family, attention dims and state sizes of a model (one entry per attention layer summed)."""
    from lapr.models import family

    views = family(model).attention(model)
    if not views:
        raise ValueError(f"{type(model).__name__} has no attention layers lapr knows")
    first = views[0]
    return {"family": model.config.model_type, "num_layers": len(views),
            "hidden_size": model.config.hidden_size, "H": first.num_v_heads, "d_k": first.head_k_dim,
            "d_v": first.head_v_dim, "state_bytes_per_seq": sum(v.state_bytes(torch.float32) for v in views)}


def cache_bytes(cache) -> int:
    """Bytes of every tensor held in an fla Cache (all layers, whole batch)."""
    layers = getattr(cache, "layers", cache)
    return sum(timing.tensor_bytes(getattr(layer, "state", layer)) for layer in layers)


def _random_ids(vocab: int, B: int, T: int, device, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g).to(device)


def bench_model(model, *, device=None, prefill_batch=(1,), prefill_len=(128,), decode_batch=(1,),
                prompt_len: int = 16, n_inputs: int = 3, seed: int = 0, labels: dict | None = None,
                log=print, decode_modes=None, verify_steps: int = 0, capture: bool | None = None,
                verify_capture: bool | None = None, **timing_kw) -> list[dict]:
    """Rows for every prefill (B, T) and decode B x decode mode (default: graph and eager on CUDA,
    eager on CPU); a failing configuration becomes an error row.

    verify_steps > 0: before timing a graph row, graph decode is checked against eager decode
    over that many tokens (columns verify_logits_max_abs_diff, verify_state_max_abs_diff,
    verify_equal); on CPU with decode_modes eager only, `verify_capture=False` still runs that
    check on the static-buffer path (a 'verify' pass without timing, recorded on the eager row).
    `capture=False`: 'graph' rows run the static-buffer path without a CUDA graph (tests on CPU).
    """
    device = torch.device(device or next(model.parameters()).device)
    if capture is False:      # the static-buffer path needs no CUDA: any mode is fine
        modes = ops.str_list({"decode_modes": decode_modes or ["eager"]}, "decode_modes", None, ops.DECODE_MODES)
    else:
        modes = ops.decode_modes_for(device, decode_modes)
    info = describe(model)
    dtype = next(model.parameters()).dtype
    impl = "torch" if backends.cpu_backend_active() else "fla"
    vocab = model.config.vocab_size
    labels = dict(labels or {})
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    base = {"level": "model", "impl": impl, "device": timing.device_label(device),
            "device_name": ops.device_name(device), "dtype": str(dtype).removeprefix("torch."),
            **{k: info[k] for k in ("family", "num_layers", "hidden_size", "H", "d_k", "d_v",
                                    "state_bytes_per_seq")},
            "model": "", "method": "", "ratio": None, "weight_bytes": weight_bytes, **labels}
    if base.get("d_k_unpruned") is None:
        base["d_k_unpruned"] = info["d_k"] if base.get("method") in ("none",) else None

    def run(phase, B, T, body, mode="eager"):
        row = {**base, "phase": phase, "B": B, "T": T, "error": "", "decode_mode": mode,
               "state_bytes": B * info["state_bytes_per_seq"], "state_bytes_read": None, "achieved_gbps": None,
               "peak_gbps": None, "roofline_frac": None, "host_ms": None}
        if phase == "decode":
            row["state_bytes_read"] = row["state_bytes"]
        t0 = time.monotonic()
        try:
            row.update(body())
            if phase == "decode":
                row.update(ops.bandwidth_columns(row["state_bytes"], row["ms_median"], row["device_name"]))
        except Exception as exc:  # noqa: BLE001 — one configuration must not end the run
            row["error"] = ops.error_text(exc)
            log(traceback.format_exc(limit=3))
            timing.release_cuda_memory(device)
        status = row["error"] or f"{row['ms_median']:.3f} ms, {row['tokens_per_s']:.4g} tok/s"
        if not row["error"] and "verify_logits_max_abs_diff" in row:
            status += (f"; decoder vs eager over {verify_steps} steps: max |dlogit| "
                       f"{row['verify_logits_max_abs_diff']:.3g}, max |dstate| {row['verify_state_max_abs_diff']:.3g}")
        label = f"{phase}[{mode}]" if phase == "decode" else phase
        log(f"[model] {info['family']} d_k={info['d_k']} {label} B={B} T={T}: {status} "
            f"({time.monotonic() - t0:.1f} s)")
        return row

    def prefill(ids):
        return model(input_ids=ids, use_cache=True, logits_to_keep=1).logits

    rows = []
    for B in prefill_batch:
        for T in prefill_len:
            inputs = [(_random_ids(vocab, B, T, device, seed + i),) for i in range(n_inputs)]
            rows.append(run("prefill", B, T, lambda: ops.measure(prefill, inputs, B * T, device, **timing_kw)))

    def prompt_cache(B):
        with torch.inference_mode():
            prompt = _random_ids(vocab, B, prompt_len, device, seed)
            return model(input_ids=prompt, use_cache=True, logits_to_keep=1).past_key_values

    for B in decode_batch:
        def eager_body(B=B):
            cache = prompt_cache(B)
            measured = cache_bytes(cache) / B
            extra = {}
            if verify_steps and "graph" not in modes and verify_capture is False:
                from lapr.bench import graph_decode

                check, _ = graph_decode.compare_decode(model, prompt_cache(B), verify_steps, seed=seed + 1000,
                                                       capture=False)
                extra = {"verify_logits_max_abs_diff": check["logits_max_abs_diff"],
                         "verify_state_max_abs_diff": check["state_max_abs_diff"], "verify_equal": check["equal"]}

            def step(ids):
                return model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits

            steps = [(_random_ids(vocab, B, 1, device, seed + 1 + i),) for i in range(max(n_inputs, 8))]
            return {**ops.measure(step, steps, B, device, **timing_kw), "prompt_len": prompt_len,
                    "cache_bytes_per_seq": measured, **extra}

        def graph_body(B=B):
            from lapr.bench import graph_decode

            cache = prompt_cache(B)
            measured = cache_bytes(cache) / B
            return {**graph_decode.bench_model_graph(model, cache, B, device, seed=seed, capture=capture,
                                                     verify_steps=verify_steps, **timing_kw),
                    "prompt_len": prompt_len, "cache_bytes_per_seq": measured}

        for mode in modes:
            rows.append(run("decode", B, 1, graph_body if mode == "graph" else eager_body, mode))
            if mode == "graph":
                timing.release_cuda_memory(device)     # the graph's private pool goes with it
    return rows


def checkpoint_labels(path) -> dict:
    """model / method / ratio of a checkpoint dir, from the results layout
    (.../pruned/MODEL/METHOD/RATIO or .../models/MODEL; anything else: the dir name, 'none', 0),
    overridden by the keys model / method / ratio of a pruning.json inside it."""
    path = Path(path)
    parts = path.resolve().parts
    labels = {"model": path.name, "method": "none", "ratio": 0.0}
    if len(parts) >= 4 and parts[-4] == "pruned":
        try:
            labels = {"model": parts[-3], "method": parts[-2], "ratio": float(parts[-1])}
        except ValueError:
            pass
    meta = path / "pruning.json"
    if meta.exists():
        found = json.loads(meta.read_text())
        labels.update({k: found[k] for k in ("model", "method", "ratio") if k in found})
        # pruning.json's model is the directory it was pruned from: its name is the model's id
        labels["model"] = Path(str(labels["model"])).name
    return labels


def bench_checkpoint(path, device=None, dtype=None, labels: dict | None = None, **kw) -> list[dict]:
    """Load an HF checkpoint dir with `lapr.models.load_model` and `bench_model` it."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"--model {path}: no config.json there (not a Hugging Face checkpoint dir)")
    from lapr.models import load_model

    model = load_model(path, device=device, dtype=dtype)
    found = {**checkpoint_labels(path), **(labels or {})}
    meta = path / "pruning.json"
    if "d_k_unpruned" not in found and meta.exists():
        found["d_k_unpruned"] = json.loads(meta.read_text()).get("d_k_before")
    return bench_model(model, device=device, labels=found, **kw)


__all__ = ["bench_model", "bench_checkpoint", "describe", "cache_bytes", "checkpoint_labels",
           "MODEL_COLUMNS", "MODEL_DEFAULTS"]
