"""Models layer: load or build fla linear-attention LMs and view their attention layers per family.

Adding a family = one module with a `Family` subclass + one line in FAMILIES.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from lapr import backends
from lapr.models import _fla_import, weights

# fla's DeltaNet / GDN without fla importing all its ~40 families; importing the family packages
# registers their configs with transformers' Auto classes, for every lapr module that imports this one
_fla_import.import_families()

from lapr.models.base import AttentionView, Family
from lapr.models.delta_net import DeltaNetFamily
from lapr.models.gated_deltanet import GatedDeltaNetFamily

FAMILIES: dict[str, Family] = {f.model_type: f for f in (DeltaNetFamily(), GatedDeltaNetFamily())}


def family(model_or_type) -> Family:
    """The adapter for a model, a config, or a model_type string; a clear error for anything else."""
    name = model_or_type if isinstance(model_or_type, str) else getattr(
        getattr(model_or_type, "config", model_or_type), "model_type", type(model_or_type).__name__)
    if name not in FAMILIES:
        raise ValueError(f"model family {name!r} has no lapr adapter (no key dimension lapr knows how to "
                         f"prune/profile); known families: {sorted(FAMILIES)}")
    return FAMILIES[name]


def attention_layers(model) -> list[AttentionView]:
    return family(model).attention(model)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device) -> torch.dtype:
    # fla's DeltaNet chunk kernel refuses float32; the CPU backend is fastest and exact in float32
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def build_model(spec: dict, seed: int = 0):
    """A freshly initialised model from a plain spec (family, hidden_size, num_layers, ...)."""
    from transformers import AutoModelForCausalLM

    backends.auto()
    config = family(spec["family"]).config_from_spec(spec)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


@contextlib.contextmanager
def _quiet(local: bool):
    """No per-tensor "Loading weights" bar for a local checkpoint: it takes seconds at most, and
    the bar was a stderr line in every job log and before every one-line error of a refused
    checkpoint. Hub downloads keep their bars."""
    from transformers.utils import logging as hf_logging

    on = local and hf_logging.is_progress_bar_enabled()
    if on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if on:
            hf_logging.enable_progress_bar()


def load_model(path_or_id: str | Path, device=None, dtype=None):
    """Load a causal LM from a local HF directory or (online) a hub id, on `device` in `dtype`."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    backends.auto()
    device = torch.device(device) if device else default_device()
    dtype = dtype or default_dtype(device)
    local = Path(path_or_id)
    if local.exists() and not (local / "config.json").exists():
        raise FileNotFoundError(f"{local} exists but holds no config.json: not a Hugging Face checkpoint")
    if not local.exists() and str(path_or_id).startswith((".", "/", "results")):
        raise FileNotFoundError(f"checkpoint {path_or_id} not found")
    if local.exists():
        weights.check_files(local)  # an empty / truncated file: its name and problem, not a bare SafetensorError
    try:
        with _quiet(local.exists()):
            model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=dtype)
    except SafetensorError as e:  # damage the header check cannot see
        raise ValueError(f"{path_or_id}: corrupt safetensors weights ({e})") from e
    family(model)  # fail early on families without an adapter
    model = model.to(device).eval()
    weights.check_finite(model, path_or_id)  # NaN weights otherwise pass every stage as NaN metrics
    return model


__all__ = ["FAMILIES", "AttentionView", "Family", "attention_layers", "build_model", "family",
           "load_model", "default_device", "default_dtype"]
