"""From a model (+ calib.pt) to per-layer kept channels: the glue between methods and surgery.

    calib = load_calib("results/tiny/profile/M/calib.pt", model)   # validated against the model
    keep = choose(model, "strong_rrqr", kept=12, calib=calib, seed=0)
    pruned = prune_channels(model, keep)

`choose` returns, per attention layer, a LongTensor [H, kept] (selections) or, for the rotations
"pca" and "pca_qk", a float basis [H, d_k, kept]. Random selection uses seed + 1009 * layer for
layer `layer` (and the method adds the head index), so layers and heads draw different channels.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from lapr.models import family
from lapr.pruning.channels import (REQUIRES, ROTATIONS, ChannelContext, rotation_basis,
                                   select_channels)
from lapr.pruning.ratio import check_method

LAYER_SEED_STRIDE = 1009
CONTEXT_FIELDS = {f.name for f in fields(ChannelContext)} - {"q_weight", "k_weight", "seed"}


def needs_calib(method: str) -> bool:
    return bool(REQUIRES[check_method(method)])


def load_calib(path: str | Path, model=None, model_dir: str | Path | None = None) -> dict:
    """torch.load a calib.pt (LAYOUT.md format); with `model`, check it matches the model's shapes;
    with `model_dir`, that it was recorded for that checkpoint (weights fingerprint, else path)."""
    from lapr.models.weights import check_source

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} not found (written by the profiling "
                                f"stage as calib.pt)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a calib.pt written by lapr profile")
    try:
        calib = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a foreign file fails torch.load in many ways (IndexError, ...)
        # only the type: torch's own words (e.g. "re-running with weights_only=False will likely
        # succeed") point the wrong way for a file that is not ours
        raise ValueError(f"{path}: not a torch file written by lapr profile (torch.load raised "
                         f"{type(e).__name__})") from e
    if not isinstance(calib, dict) or "layers" not in calib:
        raise ValueError(f"{path}: not a calib.pt (expected a dict with 'meta' and 'layers')")
    if model_dir is not None:
        meta = calib.get("meta") or {}
        check_source(meta.get("model"), meta.get("weights_fingerprint"), model_dir, f"--calib {path}")
    if model is not None:
        check_calib(calib, model, str(path))
    return calib


def check_calib(calib: dict, model, where: str = "calib") -> None:
    views = family(model).attention(model)
    meta = calib.get("meta", {})
    if meta.get("family") not in (None, model.config.model_type):
        raise ValueError(f"{where}: calibrated on family {meta['family']!r}, model is "
                         f"{model.config.model_type!r}")
    if len(calib["layers"]) != len(views):
        raise ValueError(f"{where}: {len(calib['layers'])} layers, model has {len(views)} "
                         f"attention layers")
    for view, layer in zip(views, calib["layers"]):
        heads, d_k, hidden = view.num_heads, view.head_k_dim, view.q_proj.in_features
        expect = {"input_rms": (hidden,), "q_grad": (heads, d_k, hidden),
                  "k_grad": (heads, d_k, hidden), "k_norm_mean": (heads, d_k),
                  "k_norm_cov": (heads, d_k, d_k)}
        for key, shape in expect.items():
            if layer.get(key) is not None and tuple(layer[key].shape) != shape:
                raise ValueError(f"{where}: layer {view.index} {key} has shape "
                                 f"{tuple(layer[key].shape)}, model needs {shape} (a calib.pt "
                                 f"of another model?)")
        for key in ("q_act", "k_act"):
            value = layer.get(key)
            if value is not None and (value.dim() != 3 or value.shape[0] != heads
                                      or value.shape[2] != d_k):
                raise ValueError(f"{where}: layer {view.index} {key} has shape "
                                 f"{tuple(value.shape)}, model needs [{heads}, N, {d_k}] (a "
                                 f"calib.pt of another model?)")


def contexts(model, calib: dict | None = None, seed: int = 0) -> list[ChannelContext]:
    """One ChannelContext per attention layer: the model's q/k weights + that layer's calib."""
    views = family(model).attention(model)
    if calib is not None:
        check_calib(calib, model)
    out = []
    for view in views:
        shape = (view.num_heads, view.head_k_dim, view.q_proj.in_features)
        stats = {}
        if calib is not None:
            layer = calib["layers"][view.index]
            stats = {k: layer[k].detach().float().cpu() for k in CONTEXT_FIELDS
                     if layer.get(k) is not None}
        out.append(ChannelContext(
            q_weight=view.q_proj.weight.detach().float().cpu().reshape(shape),
            k_weight=view.k_proj.weight.detach().float().cpu().reshape(shape),
            seed=seed + LAYER_SEED_STRIDE * view.index, **stats))
    return out


def choose(model, method: str, kept: int, calib: dict | None = None,
           seed: int = 0) -> list[torch.Tensor]:
    """Per-layer kept channels (LongTensor [H, kept]) or rotation bases ([H, d_k, kept])."""
    check_method(method)
    if REQUIRES[method] and calib is None:
        raise ValueError(f"method {method!r} needs calibration statistics "
                         f"({', '.join(REQUIRES[method])}); pass calib (--calib calib.pt)")
    ctxs = contexts(model, calib, seed)
    missing = sorted({f for c in ctxs for f in REQUIRES[method] if getattr(c, f) is None})
    if missing:
        # k_norm_mean / k_norm_cov (for pca) joined calib.pt later than the other fields
        raise ValueError(f"method {method!r} needs calib layer fields {missing}, which the "
                         f"calibration file lacks (written by an older lapr profile?): rerun "
                         f"`lapr profile` to rewrite calib.pt")
    if method in ROTATIONS:
        return [rotation_basis(method, c, kept) for c in ctxs]
    return [select_channels(method, c, kept) for c in ctxs]


__all__ = ["check_calib", "choose", "contexts", "load_calib", "needs_calib"]
