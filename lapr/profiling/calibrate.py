"""Calibration statistics for pruning, collected in one pass over calibration batches.

`calibrate(model, batches)` runs the LM loss forward + backward on each batch (fixed seed, eval
mode) and records, per attention layer (order of `family(model).attention(model)`):

- input_rms [D]: sqrt(mean over calibration tokens of x^2), x = the input of q_proj (= of k_proj
  and v_proj: the attention block's normalised hidden states). Wanda's activation norm.
- q_act, k_act [H, N, d_k]: the q / k that enter the delta-rule kernel before its L2 norm, i.e.
  the output of the q/k short convolutions (forward hooks on q_conv1d / k_conv1d), or of
  q_proj / k_proj plus the layer's activation when a layer has no short conv. N token rows are
  subsampled uniformly without replacement over all calibration tokens (`calibration_rows`,
  seeded), the same rows for q and k; all rows, in order, when rows >= the number of tokens.
- q_grad, k_grad [H, d_k, D]: d loss / d q_proj.weight (k_proj.weight), summed over batches,
  loss = the model's mean next-token cross-entropy per batch (Taylor scores). Only those two
  weights get gradients; every parameter's requires_grad is restored afterwards.
- state_norm [HV]: mean over calibration sequences of the Frobenius norm of each value head's
  final recurrent state (after seq_len tokens), read from fla's cache.
- k_norm_mean [H, d_k], k_norm_cov [H, d_k, d_k]: mean and mean-centred covariance
  (sum_t (k_t - mu)(k_t - mu)^T / (n - 1)) over ALL n calibration tokens (not the subsampled
  rows) of the keys after the layer's per-head normalisation (Family.qk_pre_norm / qk_norm):
  fla's L2 norm (eps 1e-6) of the pre-norm k above, or the pre-norm k itself for qk_norm='sum'
  layers, whose sum norm `k_act` already includes, and for GLA, which does not normalise keys. These are the statistics of paper A's PCA (LAP's code:
  src/key_reduction/pruners/pca.py, collect_layer_statistics accumulates k_sum / k_outer of
  l2_norm(k), compute_pca_projection centres them); accumulated in float64.

The forward runs with `use_cache=True`: that both returns the final states and keeps GDN off its
fused q/k/v-conv path, so the q/k conv modules (and their hooks) are called on every layer.
All returned tensors are float32 on the CPU (format: LAYOUT.md, calib.pt).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from lapr import backends
from lapr.models import family
from lapr.settings import Settings, setting


@dataclass
class Calib(Settings):
    """The calibration pass of `lapr profile` (the config's `profiling.calib`)."""

    SECTION = "profiling.calib"
    n_batches: int = setting(8, "calibration batches", low=1)
    seq_len: int = setting(512, "tokens per calibration sequence", low=2)
    batch_size: int = setting(4, "sequences per batch", low=1)
    rows: int = setting(2048, "token rows of q_act / k_act kept (calibration_rows)", low=1)
    source: str = setting("gutenberg_train", "the shipped corpus the windows are cut from",
                          choices=("gutenberg_train", "gutenberg_valid", "wikitext2_test_raw"))


def calibration_batches(tokenizer, n_batches: int, seq_len: int, batch_size: int, seed: int = 0,
                        source: str = "gutenberg_train") -> torch.Tensor:
    """LongTensor [n_batches, batch_size, seq_len] of random windows of a shipped corpus.

    Text is drawn from many documents: chunks of ~8 chars per token (at least 4000 chars) at
    seeded random offsets of randomly chosen documents, enough for 4x the tokens needed, are
    joined with EOS (as in pretraining) and cut into `random_windows(seed)`.
    """
    from lapr.data import encode_documents, random_windows
    from lapr.profiling.contexts import _documents

    for key, val in (("n_batches", n_batches), ("seq_len", seq_len), ("batch_size", batch_size)):
        if int(val) < 1:
            raise ValueError(f"calib.{key} must be >= 1, got {val}")
    rng = np.random.default_rng(seed)
    docs = [d for d in _documents(source) if d.strip()]
    need = n_batches * batch_size * seq_len
    chunk = max(4000, 8 * seq_len)
    n_pick = max(1, math.ceil(4 * need * 8 / chunk))
    picks = rng.choice(len(docs), size=n_pick, replace=n_pick > len(docs))
    texts = []
    for i in picks:
        doc = docs[int(i)]
        start = int(rng.integers(0, max(1, len(doc) - chunk)))
        texts.append(doc[start:start + chunk])
    tokens = encode_documents(texts, tokenizer, progress=False)
    if len(tokens) < seq_len:
        raise ValueError(f"calibration source {source!r} gave {len(tokens)} tokens < seq_len={seq_len}")
    windows = random_windows(tokens, n_batches * batch_size, seq_len, seed)
    return windows.view(n_batches, batch_size, seq_len)


def calibration_rows(total: int, rows: int, seed: int) -> torch.Tensor:
    """Sorted indices of the `rows` token rows kept out of `total` (flattened batch-major)."""
    if rows < 1:
        raise ValueError(f"calib.rows must be >= 1, got {rows}")
    if rows >= total:
        return torch.arange(total)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=g)[:rows].sort().values


def calibrate(model, batches, rows: int = 2048, seed: int = 0, model_name: str = "",
              progress: bool = False, meta: dict | None = None) -> dict:
    """The calib.pt dict (LAYOUT.md) of `model` over `batches` ([n, B, L] tensor or iterable of [B, L])."""
    fam = family(model)
    views = fam.attention(model)
    if not views:
        raise ValueError("model has no attention layers the lapr adapter recognises")
    device = next(model.parameters()).device
    if device.type == "cpu":
        backends.auto()
    backends.for_training(model)  # GDN backward on Hopper needs lapr's gated op (fla #640)
    batches = [b for b in batches]
    if not batches:
        raise ValueError("no calibration batches")
    for b in batches:
        if b.dim() != 2 or b.shape[1] < 2:
            raise ValueError(f"calibration batches must be [B, L] with L >= 2, got {tuple(b.shape)}")
    sizes = [b.numel() for b in batches]
    keep = calibration_rows(sum(sizes), rows, seed)
    offsets = np.cumsum([0] + sizes)
    n_rows = len(keep)

    stats = []
    for v in views:
        D = v.q_proj.in_features
        stats.append({"sumsq": torch.zeros(D, dtype=torch.float64, device=device), "count": 0,
                      "q": [], "k": [], "state": torch.zeros(v.num_v_heads, dtype=torch.float64, device=device),
                      "q_grad": torch.zeros_like(v.q_proj.weight, dtype=torch.float32),
                      "k_grad": torch.zeros_like(v.k_proj.weight, dtype=torch.float32),
                      "k_sum": torch.zeros(v.num_heads, v.head_k_dim, dtype=torch.float64, device=device),
                      "k_outer": torch.zeros(v.num_heads, v.head_k_dim, v.head_k_dim,
                                             dtype=torch.float64, device=device),
                      "k_count": 0})
    current = {"rows": None}  # local row indices of the batch being processed

    def rms_hook(i):
        def hook(mod, args):
            x = args[0].detach()
            stats[i]["sumsq"] += x.double().square().flatten(0, -2).sum(0)
            stats[i]["count"] += x.flatten(0, -2).shape[0]
        return hook

    def act_hook(i, key, post, norm):
        def hook(mod, args, out):
            y = post((out[0] if isinstance(out, tuple) else out).detach().flatten(0, -2).float())
            if key == "k":  # post-norm key statistics over every token (paper A's PCA)
                v = views[i]
                k = norm(y.view(-1, v.num_heads, v.head_k_dim)).double()
                stats[i]["k_sum"] += k.sum(0)
                stats[i]["k_outer"] += torch.einsum("nhd,nhe->hde", k, k)
                stats[i]["k_count"] += k.shape[0]
            stats[i][key].append(y[current["rows"]].cpu())  # post acts per row: commutes
        return hook

    handles = []
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    try:
        for i, v in enumerate(views):
            post, norm = fam.qk_pre_norm(v), fam.qk_norm(v)  # the family's q/k as the kernel sees them
            handles.append(v.q_proj.register_forward_pre_hook(rms_hook(i)))
            handles.append((v.q_conv or v.q_proj).register_forward_hook(act_hook(i, "q", post, norm)))
            handles.append((v.k_conv or v.k_proj).register_forward_hook(act_hook(i, "k", post, norm)))
        for p in model.parameters():
            p.requires_grad_(False)
        for v in views:
            v.q_proj.weight.requires_grad_(True)
            v.k_proj.weight.requires_grad_(True)
            v.q_proj.weight.grad = v.k_proj.weight.grad = None
        model.eval()
        from fla.models.utils import Cache

        for n, batch in enumerate(tqdm(batches, desc="calibrate", unit="batch", disable=not progress)):
            lo = int(offsets[n])
            sel = keep[(keep >= lo) & (keep < lo + sizes[n])] - lo
            current["rows"] = sel.to(device)
            x = batch.to(device)
            cache = Cache()
            with torch.enable_grad():
                out = model(input_ids=x, labels=x, use_cache=True, past_key_values=cache)
                out.loss.backward()
            for i, v in enumerate(views):
                s = stats[i]
                s["q_grad"] += v.q_proj.weight.grad.float()
                s["k_grad"] += v.k_proj.weight.grad.float()
                v.q_proj.weight.grad = v.k_proj.weight.grad = None
                state = fam.state_from_cache(cache[getattr(v.module, "layer_idx", v.index)]).detach()
                s["state"] += torch.linalg.matrix_norm(state.float()).double().sum(0)
            del out, cache
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
            if not flag:
                p.grad = None
        for v in views:
            v.q_proj.weight.grad = v.k_proj.weight.grad = None
        model.train(was_training)

    n_seq = sum(b.shape[0] for b in batches)
    layers = []
    for v, s in zip(views, stats):
        H, dk = v.num_heads, v.head_k_dim
        D = v.q_proj.in_features

        def per_head(acts):
            a = torch.cat(acts, 0)                                   # [N, H*d_k]
            return a.view(a.shape[0], H, dk).permute(1, 0, 2).contiguous()  # [H, N, d_k]

        n = s["k_count"]
        mean = s["k_sum"] / max(1, n)
        cov = (s["k_outer"] - n * torch.einsum("hd,he->hde", mean, mean)) / max(1, n - 1)
        layers.append({
            "input_rms": (s["sumsq"] / max(1, s["count"])).sqrt().float().cpu(),
            "q_act": per_head(s["q"]),
            "k_act": per_head(s["k"]),
            "q_grad": s["q_grad"].view(H, dk, D).cpu(),
            "k_grad": s["k_grad"].view(H, dk, D).cpu(),
            "state_norm": (s["state"] / n_seq).float().cpu(),
            "k_norm_mean": mean.float().cpu(),
            "k_norm_cov": cov.float().cpu(),
        })
    seq_lens = {b.shape[1] for b in batches}
    return {"meta": {"model": str(model_name), "n_tokens": int(sum(sizes)),
                     "seq_len": int(seq_lens.pop()) if len(seq_lens) == 1 else -1,
                     "rows": int(n_rows), "seed": int(seed), "family": fam.model_type,
                     "n_batches": len(batches), "batch_size": int(batches[0].shape[0]), **(meta or {})},
            "layers": layers}


__all__ = ["Calib", "calibrate", "calibration_batches", "calibration_rows"]
