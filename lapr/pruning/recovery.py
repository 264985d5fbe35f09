"""Optional recovery fine-tuning after pruning: LoRA on q/k/v (peft), optional KL distillation.

    settings = recovery_settings({"enabled": True, "steps": 200, "distill": True})
    model, log = recover(pruned, batches, settings, teacher=unpruned)

LoRA adapters (rank `lora_r`, scale `lora_alpha / lora_r`; paper default r=32, alpha=64) are put
on the `targets` linears (q_proj, k_proj, v_proj) of every attention layer; everything else stays
frozen. The loss per batch x [B, L] of token ids is

    loss = CE(student(x)[:, :-1], x[:, 1:])  +  distill_weight * T^2 * KL(p_teacher^T || p_student^T)

with the KL term only when `distill` is on and a teacher (the unpruned model) is given, averaged
over all B*L positions, at temperature T. AdamW (no weight decay on adapters by default), linear
warm-up then constant learning rate, gradient clipping. After the last step the adapters are
merged into the base weights (`merge`) and a plain transformers model is returned: same class,
same state-dict keys and shapes as the input, so it saves and reloads like any checkpoint.

On CUDA the forward runs under bf16 autocast (fla's Triton kernels want bf16 inputs) with
float32 master weights; on CPU everything is float32 (lapr's CPU backend).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from lapr import backends

DEFAULTS = {
    "enabled": False,
    "steps": 200,
    "lr": 2e-4,
    "warmup": 10,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "lora_r": 32,
    "lora_alpha": 64,
    "lora_dropout": 0.0,
    "targets": ["q_proj", "k_proj", "v_proj"],
    "distill": False,
    "distill_weight": 1.0,
    "temperature": 1.0,
    "seq_len": 256,
    "batch_size": 8,
    "data": "gutenberg_train",   # a shipped corpus name (lapr.data) or a .npy token file
    "max_chars": 2_000_000,      # characters of `data` tokenised (shipped corpora only)
}
_POSITIVE_INT = ("steps", "lora_r", "seq_len", "batch_size")
_NONNEG = ("lr", "warmup", "weight_decay", "grad_clip", "lora_dropout", "distill_weight")


def recovery_settings(raw: dict | None) -> dict:
    """Defaults merged with `raw`; a ValueError naming any unknown key or bad value."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown recovery setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    out = {**copy.deepcopy(DEFAULTS), **raw}
    for key in ("enabled", "distill"):
        if not isinstance(out[key], bool):
            raise ValueError(f"recovery.{key} must be true or false; got {out[key]!r}")
    for key in _POSITIVE_INT:
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ValueError(f"recovery.{key} must be a positive int; got {out[key]!r}")
    for key in _NONNEG:
        if isinstance(out[key], bool) or not isinstance(out[key], int | float) or out[key] < 0:
            raise ValueError(f"recovery.{key} must be a number >= 0; got {out[key]!r}")
    for key in ("lora_alpha", "temperature"):
        if isinstance(out[key], bool) or not isinstance(out[key], int | float) or out[key] <= 0:
            raise ValueError(f"recovery.{key} must be a number > 0; got {out[key]!r}")
    if not out["targets"] or not all(isinstance(t, str) for t in out["targets"]):
        raise ValueError(f"recovery.targets must be a non-empty list of module names; got "
                         f"{out['targets']!r}")
    if out["max_chars"] is not None and (not isinstance(out["max_chars"], int)
                                         or out["max_chars"] < 1):
        raise ValueError(f"recovery.max_chars must be a positive int or null; got "
                         f"{out['max_chars']!r}")
    return out


def add_lora(model, settings: dict):
    """Wrap `model` (in place) with LoRA adapters on settings['targets']; returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings["lora_r"], lora_alpha=settings["lora_alpha"],
                        lora_dropout=settings["lora_dropout"],
                        target_modules=list(settings["targets"]), bias="none")
    with warnings.catch_warnings():  # peft 0.21 calls a transformers-5 deprecated helper
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)
        return get_peft_model(model, config)


def merge(peft_model):
    """Merge the adapters into the base weights; the plain model, all parameters trainable."""
    model = peft_model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def distill_loss(student_logits, teacher_logits, temperature: float):
    """T^2 * KL(softmax(t/T) || softmax(s/T)), mean over positions."""
    vocab = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, -1)
    t = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def recover(model, batches: Iterable[torch.Tensor] | Iterator[torch.Tensor], settings: dict,
            teacher=None, device=None, seed: int = 0, merge_adapters: bool = True,
            progress: bool = True):
    """LoRA fine-tune `model` (modified in place) for settings['steps'] batches.

    Returns (model, log): the merged plain model (or the PeftModel when merge_adapters=False)
    and one dict per step (step, loss, ce, kl, lr). `batches` yields LongTensor [B, L]; an
    iterable is cycled if shorter than `steps`.
    """
    from tqdm import tqdm

    settings = recovery_settings(settings)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    distill = settings["distill"] and teacher is not None
    if settings["distill"] and teacher is None:
        raise ValueError("recovery.distill is on but no teacher model was given")
    torch.manual_seed(seed)
    model.to(device)
    backends.for_training(model)  # GDN backward on Hopper needs lapr's gated op (fla #640)
    peft_model = add_lora(model, settings)
    peft_model.train()
    if distill:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    source = iter(batches)
    cached: list[torch.Tensor] = []
    log = []
    bar = tqdm(range(settings["steps"]), desc="recovery", disable=not progress, mininterval=5)
    for step in bar:
        try:
            x = next(source)
            if not isinstance(batches, Iterator):
                cached.append(x)
        except StopIteration:
            if not cached:
                raise ValueError("recovery got no batches") from None
            x = cached[step % len(cached)]
        x = x.to(device)
        lr = settings["lr"] * min(1.0, (step + 1) / max(1, settings["warmup"]))
        for group in opt.param_groups:
            group["lr"] = lr
        with _autocast(device):
            logits = peft_model(input_ids=x).logits
            ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                 x[:, 1:].reshape(-1))
            kl = torch.zeros((), device=device)
            if distill:
                with torch.no_grad():
                    target = teacher(input_ids=x).logits
                kl = distill_loss(logits, target, settings["temperature"])
            loss = ce + settings["distill_weight"] * kl
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"recovery loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, settings["grad_clip"])
        opt.step()
        log.append({"step": step + 1, "loss": loss.item(), "ce": ce.item(), "kl": kl.item(),
                    "lr": lr})
        bar.set_postfix(loss=f"{loss.item():.3f}")
    peft_model.eval()
    return (merge(peft_model) if merge_adapters else peft_model), log


def token_batches(model_dir, settings: dict, seed: int = 0) -> Iterator[torch.Tensor]:
    """Endless [batch_size, seq_len] batches of `settings['data']` tokenised with the
    tokenizer saved in `model_dir` (shipped corpus name, or a .npy file of token ids)."""
    from pathlib import Path

    import numpy as np

    from lapr.data import encode_corpus, known_names, load_tokenizer, train_batches

    data = settings["data"]
    if str(data).endswith(".npy"):
        if not Path(data).is_file():
            raise FileNotFoundError(f"recovery.data token file {data} not found")
        tokens = np.load(data)
    elif data in known_names():
        tokens = encode_corpus(data, load_tokenizer(str(model_dir)), settings["max_chars"])
    else:
        raise ValueError(f"recovery.data must be a shipped corpus ({', '.join(known_names())}) "
                         f"or a .npy token file; got {data!r}")
    return train_batches(tokens, settings["batch_size"], settings["seq_len"], seed)


__all__ = ["DEFAULTS", "add_lora", "distill_loss", "merge", "recover", "recovery_settings",
           "token_batches"]
