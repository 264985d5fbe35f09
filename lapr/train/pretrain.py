"""Pretrain a small DeltaNet / Gated DeltaNet from scratch (nanoGPT-style loop, AdamW + cosine).

No pretrained linear-attention weights are reachable offline, so the suite trains its own on the
shipped Project Gutenberg books. The result is a Hugging Face checkpoint that stock fla reloads,
with the tokenizer saved beside it, a loss curve, and perplexities next to the unigram baseline.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lapr import backends, provenance
from lapr.data import eval_windows, train_batches, unigram_baseline
from lapr.models import build_model, resolve_device


@torch.no_grad()
def mean_nll(model, windows: torch.Tensor, batch_size: int = 8) -> float:
    """Mean next-token NLL (nats) over [n, L] windows; each window scored independently."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        x = windows[i : i + batch_size].to(device)
        with _autocast(device):
            logits = model(x).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                x[:, 1:].reshape(-1), reduction="sum")
        total, count = total + nll.item(), count + x[:, 1:].numel()
    return total / count


def _autocast(device):
    # on CUDA fla's chunk kernels want bf16 inputs; the CPU backend runs in float32
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


@torch.no_grad()
def ema_update(ema, model, decay: float, step: int) -> float:
    """ema <- d * ema + (1 - d) * model with d = min(decay, (1 + step) / (10 + step)): a short
    memory while the weights still move fast (step counts from 0). Returns d."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
    return d


def lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(spec: dict, settings: dict, train_tokens: np.ndarray, eval_sets: dict[str, np.ndarray],
             out_dir, tokenizer=None, seed: int = 0, device=None) -> dict:
    """Train `spec` on `train_tokens`; write checkpoint, loss curve and metrics under `out_dir`."""
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = build_model(spec, seed=seed).to(device)
    backend = backends.for_training(model)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=settings["lr"], betas=(0.9, 0.95))
    steps, seq_len, bs = settings["steps"], settings["seq_len"], settings["batch_size"]
    batches = train_batches(train_tokens, bs, seq_len + 1, seed=seed)
    valid_name = next(iter(eval_sets))
    valid_windows = eval_windows(eval_sets[valid_name], seq_len, max_windows=settings.get("eval_windows", 32))

    # optional exponential moving average of the weights (settings["ema"] = decay, 0 = off): the
    # checkpoint and the final metrics are the EMA model's. Out-of-domain perplexity (WikiText) of
    # these small models swings by ~0.2 nats between neighbouring steps while in-domain loss is
    # smooth; the average over the last ~1/(1-decay) steps removes that step-to-step lottery.
    ema_decay = float(settings.get("ema") or 0.0)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if ema_decay else None

    curve, start = [], time.time()
    bar = tqdm(range(steps), desc=f"pretrain {spec['family']}", mininterval=5)
    stopped_at, warm = None, None
    for step in bar:
        # the wall-clock budget starts after the first step: on a GPU that step includes minutes of
        # Triton compilation and autotuning that say nothing about training
        if step == 1:
            warm = time.time()
        if warm and settings.get("time_limit_s") and time.time() - warm > settings["time_limit_s"]:
            stopped_at = step  # out of wall-clock budget: keep what we have, say so in metrics
            break
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, settings["lr"], settings["warmup"])
        x = next(batches).to(device)
        with _autocast(device):
            loss = model(x[:, :-1], labels=x[:, :-1]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.get("grad_clip", 1.0))
        opt.step()
        if ema is not None:
            ema_update(ema, model, ema_decay, step)
        row = {"step": step + 1, "tokens": (step + 1) * bs * seq_len, "train_loss": loss.item(),
               "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - start}
        if (step + 1) % settings["eval_every"] == 0 or step + 1 == steps:
            if device.type == "cuda":
                row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            row["valid_loss"] = mean_nll(model, valid_windows)
            if ema is not None:
                row["valid_loss_ema"] = mean_nll(ema, valid_windows)
            bar.set_postfix(loss=f"{loss.item():.3f}", valid=f"{row['valid_loss']:.3f}")
        curve.append(row)
    train_time = time.time() - start
    if ema is not None:
        model = ema  # what is evaluated and saved below

    done = stopped_at if stopped_at is not None else steps
    metrics = {"family": spec["family"], "parameters": n_params, "steps": done, "planned_steps": steps,
               "stopped_early": stopped_at is not None, "train_tokens_seen": done * bs * seq_len, "backend": backend, "train_time_s": round(train_time, 1),
               "first_step_s": round((warm or time.time()) - start, 1), "ema": ema_decay}
    for name, tokens in eval_sets.items():
        windows = eval_windows(tokens, settings["eval_seq_len"], max_windows=settings.get("final_eval_windows"))
        nll = mean_nll(model, windows)
        base = unigram_baseline(train_tokens, windows.flatten().numpy(), model.config.vocab_size)
        metrics[name] = {"nll": nll, "ppl": math.exp(nll), "tokens": int(windows.numel()),
                         "unigram_ppl": base["ppl"], "beats_unigram": nll < base["nll"]}

    with provenance.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        pd.DataFrame(curve).to_csv(tmp / "loss_curve.csv", index=False)
        provenance.write_json(tmp / "metrics.json", {
            **metrics, "provenance": provenance.record({"spec": spec, "train": settings}, seed, device)})
    return metrics
