"""Models layer: load or build fla linear-attention LMs and view their attention layers per family.

Adding a family = one module in this package with a `Family` subclass (lapr.models.base): every
module lapr.families finds (a class deriving from Family with a `model_type`) is imported here and
its adapter registered in FAMILIES; nothing else names a family.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from lapr import backends
from lapr.models import _fla_import, weights

from lapr import families as _declared
from lapr.models.base import AttentionView, Family

# fla's families that lapr adapts, without fla importing all its ~40 families; each family module
# imports its fla model package, which registers the config with transformers' Auto classes, for
# every lapr module that imports this one
_MODULES = _fla_import.import_families([f"lapr.models.{d['module']}" for d in _declared.declared().values()])


def _adapters() -> dict[str, Family]:
    out = {}
    for model_type, facts in _declared.declared().items():
        adapter = getattr(_MODULES[f"lapr.models.{facts['module']}"], facts["class"])()
        if adapter.model_type != model_type:
            raise RuntimeError(f"{facts['module']}.{facts['class']}: model_type {adapter.model_type!r} "
                               f"is not the declared {model_type!r}")
        out[model_type] = adapter
    return out


FAMILIES: dict[str, Family] = _adapters()


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


def resolve_device(name=None) -> torch.device:
    """A stage's device setting as a torch.device (None or '': default_device()); ValueError, naming
    the value, for a device torch does not know or a CUDA device on a machine without one (torch's
    own errors are a RuntimeError and an AssertionError raised at the first tensor moved)."""
    if not name:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device on this machine")
    return device


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


@contextlib.contextmanager
def _no_load_report():
    """Drop transformers' "LOAD REPORT" table (a multi-line stderr warning listing missing /
    unexpected / mismatched keys): load_model refuses every such checkpoint with a message
    naming them (_check_loading_info), so the table would only precede that one-line error."""
    import logging

    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.modeling_utils")

    class _Drop(logging.Filter):
        def filter(self, record):
            return "LOAD REPORT" not in str(record.msg)

    drop = _Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


_SHOWN_KEYS = 5  # tensor names quoted per kind in a refusal; the count covers the rest


def _check_loading_info(info: dict, source, arch: str = "model") -> None:
    """Refuse a checkpoint whose tensors do not match the model its config.json builds.

    `info`: from_pretrained(..., output_loading_info=True). transformers otherwise only warns:
    a missing tensor is left randomly initialised, an unexpected one is dropped, a wrong shape
    (with ignore_mismatched_sizes) is re-initialised, and every later stage would measure that
    model. Keys the model ties (lm_head.weight with tie_word_embeddings, fla's
    _tied_weights_keys) or declares ignorable are not reported by transformers, so a tied
    checkpoint without lm_head.weight loads.
    """
    def names(items) -> str:
        items = sorted(items)
        more = f", ... ({len(items) - _SHOWN_KEYS} more)" if len(items) > _SHOWN_KEYS else ""
        return ", ".join(items[:_SHOWN_KEYS]) + more

    problems = []
    missing = set(info.get("missing_keys") or ())
    mismatched = {tuple(m)[0]: tuple(m)[1:] for m in info.get("mismatched_keys") or ()}
    missing -= set(mismatched)
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) (transformers would leave them "
                        f"randomly initialised): {names(missing)}")
    unexpected = info.get("unexpected_keys") or ()
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) (transformers would drop "
                        f"them): {names(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) of the wrong shape (checkpoint vs model): "
                        + names(f"{k} {' vs '.join(str(tuple(s)) for s in shapes)}"
                                for k, shapes in mismatched.items()))
    errors = [str(e) for e in info.get("error_msgs") or ()]
    if errors:
        problems.append(f"loading errors: {'; '.join(errors[:_SHOWN_KEYS])}")
    if problems:
        raise ValueError(f"{source}: weights do not match the {arch} its config.json builds; "
                         f"refusing to load it (strict loading): {'; '.join(problems)}")


def load_model(path_or_id: str | Path, device=None, dtype=None):
    """Load a causal LM from a local HF directory or (online) a hub id, on `device` in `dtype`.

    Strict: a checkpoint with missing, unexpected or wrongly shaped tensors is refused with a
    ValueError naming them (_check_loading_info), never loaded with random weights."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    backends.auto()
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    local = Path(path_or_id)
    if local.exists() and not (local / "config.json").exists():
        raise FileNotFoundError(f"{local} exists but holds no config.json: not a Hugging Face checkpoint")
    if not local.exists() and str(path_or_id).startswith((".", "/", "results")):
        raise FileNotFoundError(f"checkpoint {path_or_id} not found")
    if local.exists():
        weights.check_files(local)  # an empty / truncated file: its name and problem, not a bare SafetensorError
    try:
        with _quiet(local.exists()), _no_load_report():
            # ignore_mismatched_sizes: a wrong shape comes back in `info` (refused below, with the
            # other mismatches) instead of as transformers' RuntimeError pointing at its report
            model, info = AutoModelForCausalLM.from_pretrained(
                str(path_or_id), dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True)
    except SafetensorError as e:  # damage the header check cannot see
        raise ValueError(f"{path_or_id}: corrupt safetensors weights ({e})") from e
    _check_loading_info(info, path_or_id, type(model).__name__)
    family(model)  # fail early on families without an adapter
    model = model.to(device).eval()
    weights.check_finite(model, path_or_id)  # NaN weights otherwise pass every stage as NaN metrics
    return model


__all__ = ["FAMILIES", "AttentionView", "Family", "attention_layers", "build_model", "family",
           "load_model", "default_device", "default_dtype", "resolve_device"]
