"""Optional recovery fine-tuning after pruning: LoRA on q/k/v (peft) + KL distillation.

    settings = recovery_settings({"enabled": True, "steps": 200})
    model, log = recover(pruned, batches, settings, teacher=unpruned)

The defaults are paper A's recipe as its code runs it: camail-official/LinearAttentionPruning
scripts/finetuning/run_lora.sh (commit fe44b58) launching its flame trainer (flame/flame/train.py
on torchtitan), checked line by line:

    LoRA r 32, alpha 64, dropout 0, bias none, on q_proj,k_proj,v_proj    run_lora.sh l. 26-30
    AdamW, eps 1e-15, lr 1e-4                                               run_lora.sh l. 76-78
    betas (0.9, 0.95), weight decay 0.1 (flame defaults, not overridden)    flame/flame/
                                                                            config_manager.py l. 264-274
    warm-up 1 step, cosine decay to lr_min = 0.1 x lr                      run_lora.sh l. 79-81
    gradient clipping at norm 1.0                                           run_lora.sh l. 86
    distillation from the unpruned model, weight 1.0, temperature 2.0     run_lora.sh l. 101-103
    conv1d, norm and bias parameters trained in full next to the adapters  flame/flame/train.py l. 435-459
    one AdamW group over every trainable parameter, so weight decay hits
    the adapters AND those unfrozen conv/norm/bias weights                 torchtitan OptimizersContainer
                                                                            (params = requires_grad ones)

LAP trains 2000 optimizer steps of 16 x 2048 tokens x 100 gradient-accumulation micro-batches
(run_lora.sh l. 82-90); `steps`, `batch_size`, `seq_len` here are compute-bound and the profiles
set them (workflow/config/*.yaml say by how much they shorten the run).

Loss per batch x [B, L] of token ids (train.py l. 729-769):

    loss = CE(student(x)[:, :-1], x[:, 1:])  +  distill_weight * T^2 * KL(p_teacher^T || p_student^T)

the KL term averaged over all B*L positions (train.py flattens to [B*L, V] and takes
'batchmean'), at temperature T; only when `distill` is on (a teacher, the unpruned model, must
then be given). Learning rate per step: torchtitan's `linear_warmup_stable_decay`
(torchtitan/components/lr_scheduler.py, decay_ratio None, as flame's config leaves it): step
s < warmup runs at lr (s + 1) / (warmup + 1); later steps at
lr (m + (1 - m) c(p)), p = (s + 1 - warmup) / (steps - warmup + 1), m = min_lr_ratio and
c = (1 + cos(pi p)) / 2 for `cosine`, 1 - p for `linear`, 1 for `constant` (lapr's former
schedule). The last step thus runs at m lr up to O(1/steps^2) (0.1014 lr at 40 steps, 0.1000006
lr at 2000). After the last step the adapters are merged into the base weights (`merge`) and a
plain transformers model is returned: same class, same state-dict keys and shapes as the input,
so it saves and reloads like any checkpoint.

On CUDA the forward runs under bf16 autocast (fla's Triton kernels want bf16 inputs) with
float32 master weights; on CPU everything is float32 (lapr's CPU backend).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lapr import backends
from lapr.settings import Settings, setting

SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class Recovery(Settings):
    """LoRA recovery fine-tuning of a pruned checkpoint (the config's `prune.recovery`, less the
    workflow's `methods` / `ratios`). The defaults are paper A's recipe (LAP
    scripts/finetuning/run_lora.sh with its flame trainer) but for steps, batch and length, which
    the profiles set."""

    SECTION = "prune.recovery"
    enabled: bool = setting(False, "recover the pruned checkpoint")
    steps: int = setting(200, "optimizer steps (LAP: 2000 steps of 16 x 2048 x 100 tokens; profiles set this)",
                         low=1)
    lr: float = setting(1e-4, low=0)
    betas: list[float] = setting([0.9, 0.95], "AdamW betas", min_items=2, max_items=2, items=dict(low=0, below=1))
    eps: float = setting(1e-15, "AdamW eps", low=0)
    weight_decay: float = setting(0.1, "on every trainable parameter (one AdamW group, as torchtitan's)", low=0)
    schedule: str = setting("cosine", "lr after the warm-up (torchtitan's decay)", choices=SCHEDULES)
    warmup: int = setting(1, "linear warm-up steps", low=0)
    min_lr_ratio: float = setting(0.1, "the decay ends at min_lr_ratio x lr (torchtitan's lr_min)", low=0, high=1)
    grad_clip: float = setting(1.0, "gradient norm clip (0: none)", low=0)
    lora_r: int = setting(32, low=1)
    lora_alpha: float = setting(64, above=0)
    lora_dropout: float = setting(0.0, low=0)
    targets: list[str] = setting(["q_proj", "k_proj", "v_proj"], "modules that get LoRA adapters", min_items=1)
    unfreeze: list[str] = setting(["conv1d", "norm", "bias"], "parameter-name substrings trained in full next "
                                  "to the adapters", items=dict(min_items=1))
    distill: bool = setting(True, "distil from the unpruned model (KL at `temperature`)")
    distill_weight: float = setting(1.0, low=0)
    temperature: float = setting(2.0, above=0)
    seq_len: int = setting(256, low=1)
    batch_size: int = setting(8, low=1)
    data: str = setting("gutenberg_train", "a shipped corpus name (lapr.data) or a .npy token file")
    max_chars: int | None = setting(2_000_000, "characters of `data` tokenised (shipped corpora only)", low=1)


def recovery_settings(raw: dict | None) -> dict:
    """Recovery settings (a dict, or None for the defaults) with every key filled in (Recovery)."""
    return Recovery.parse(raw).as_dict()


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


def unfreeze(peft_model, settings: dict) -> list[str]:
    """Make every parameter whose name contains one of settings['unfreeze'] trainable, as LAP's
    train.py (l. 435-459) does for 'conv1d', 'norm' and 'bias' after wrapping with LoRA: the
    short convs the surgery changed, the norms and any bias train in full. Returns the names."""
    names = []
    for name, p in peft_model.named_parameters():
        if any(part in name for part in settings["unfreeze"]):
            p.requires_grad_(True)
            names.append(name)
    return names


def build_optimizer(peft_model, settings: dict) -> torch.optim.AdamW:
    """AdamW over every trainable parameter in ONE group: torchtitan's OptimizersContainer takes
    [p for p in model.parameters() if p.requires_grad] with one weight_decay, so LAP decays the
    LoRA A/B matrices and the unfrozen conv/norm/bias weights alike (no no-decay group)."""
    params = [p for p in peft_model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=settings["lr"], betas=tuple(settings["betas"]),
                             eps=settings["eps"], weight_decay=settings["weight_decay"])


def lr_factor(step: int, settings: dict) -> float:
    """Multiplier of settings['lr'] at 0-based optimizer step `step`: torchtitan's
    linear_warmup_stable_decay (components/lr_scheduler.py) with decay_ratio None, i.e. no stable
    phase: linear warm-up, then decay to min_lr_ratio over the remaining steps (module doc)."""
    steps, warmup = settings["steps"], settings["warmup"]
    decay = max(0, steps - warmup)
    step = min(step, steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if settings["schedule"] == "constant" or decay == 0:
        return 1.0
    progress = (step + 1 - warmup) / (decay + 1)
    if settings["schedule"] == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # linear
        shape = 1.0 - progress
    low = settings["min_lr_ratio"]
    return low + (1.0 - low) * shape


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
    unfreeze(peft_model, settings)
    peft_model.train()
    if distill:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = build_optimizer(peft_model, settings)
    params = [p for group in opt.param_groups for p in group["params"]]
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
        lr = settings["lr"] * lr_factor(step, settings)
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


__all__ = ["Recovery", "SCHEDULES", "add_lora", "build_optimizer", "distill_loss", "lr_factor",
           "merge", "recover", "recovery_settings", "token_batches", "unfreeze"]
