"""Model-level benchmark: prefill and cached decode throughput, peak memory and state memory.

- prefill: one forward over random token ids [B, T] with `use_cache=True` (the cache a generation
  starts from) and `logits_to_keep=1` (as generation does; full-sequence logits would time the LM
  head, not the attention). tokens/s = B*T / median.
- decode: a prompt of `prompt_len` tokens fills the recurrent cache, then every timed call is one
  step: one token per sequence through `model(ids[B, 1], past_key_values=cache, use_cache=True)`;
  the cache carries on from step to step as in generation. tokens/s = B / median step time.
- state memory per sequence: analytic, from `lapr.models.family(model).attention(model)` state_bytes
  (float32, as fla keeps states) summed over layers (`state_bytes_per_seq`); measured, every tensor in
  the fla cache after the prompt (recurrent states + short-conv states) / B (`cache_bytes_per_seq`).
Rows share the op-level columns (level 'model', T = 1 for decode) plus model, method, ratio,
num_layers, hidden_size, prompt_len, state_bytes_per_seq, cache_bytes_per_seq; `state_bytes` is the
whole batch's state over all layers.
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
                               "state_bytes_per_seq", "cache_bytes_per_seq"]
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
                log=print, **timing_kw) -> list[dict]:
    """Rows for every prefill (B, T) and decode B; a failing configuration becomes an error row."""
    device = torch.device(device or next(model.parameters()).device)
    info = describe(model)
    dtype = next(model.parameters()).dtype
    impl = "torch" if backends.cpu_backend_active() else "fla"
    vocab = model.config.vocab_size
    base = {"level": "model", "impl": impl, "device": timing.device_label(device),
            "device_name": ops.device_name(device), "dtype": str(dtype).removeprefix("torch."),
            **{k: info[k] for k in ("family", "num_layers", "hidden_size", "H", "d_k", "d_v",
                                    "state_bytes_per_seq")},
            "model": "", "method": "", "ratio": None, **(labels or {})}

    def run(phase, B, T, body):
        row = {**base, "phase": phase, "B": B, "T": T, "error": "",
               "state_bytes": B * info["state_bytes_per_seq"]}
        t0 = time.monotonic()
        try:
            row.update(body())
        except Exception as exc:  # noqa: BLE001 — one configuration must not end the run
            row["error"] = ops.error_text(exc)
            log(traceback.format_exc(limit=3))
            timing.release_cuda_memory(device)
        status = row["error"] or f"{row['ms_median']:.3f} ms, {row['tokens_per_s']:.4g} tok/s"
        log(f"[model] {info['family']} d_k={info['d_k']} {phase} B={B} T={T}: {status} "
            f"({time.monotonic() - t0:.1f} s)")
        return row

    def prefill(ids):
        return model(input_ids=ids, use_cache=True, logits_to_keep=1).logits

    rows = []
    for B in prefill_batch:
        for T in prefill_len:
            inputs = [(_random_ids(vocab, B, T, device, seed + i),) for i in range(n_inputs)]
            rows.append(run("prefill", B, T, lambda: ops.measure(prefill, inputs, B * T, device, **timing_kw)))

    for B in decode_batch:
        def decode_body(B=B):
            with torch.inference_mode():
                prompt = _random_ids(vocab, B, prompt_len, device, seed)
                cache = model(input_ids=prompt, use_cache=True, logits_to_keep=1).past_key_values
            measured = cache_bytes(cache) / B

            def step(ids):
                return model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits

            steps = [(_random_ids(vocab, B, 1, device, seed + 1 + i),) for i in range(max(n_inputs, 8))]
            return {**ops.measure(step, steps, B, device, **timing_kw), "prompt_len": prompt_len,
                    "cache_bytes_per_seq": measured}

        rows.append(run("decode", B, 1, decode_body))
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
    return labels


def bench_checkpoint(path, device=None, dtype=None, labels: dict | None = None, **kw) -> list[dict]:
    """Load an HF checkpoint dir with `lapr.models.load_model` and `bench_model` it."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"--model {path}: no config.json there (not a Hugging Face checkpoint dir)")
    from lapr.models import load_model

    model = load_model(path, device=device, dtype=dtype)
    return bench_model(model, device=device, labels={**checkpoint_labels(path), **(labels or {})}, **kw)


__all__ = ["bench_model", "bench_checkpoint", "describe", "cache_bytes", "checkpoint_labels",
           "MODEL_COLUMNS", "MODEL_DEFAULTS"]
