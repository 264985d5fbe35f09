"""Tiny models and a real (hook-collected) calib dict for the pruning tests."""

from __future__ import annotations

import pytest
import torch

from lapr.models import FAMILIES as ADAPTERS
from lapr.models import build_model, family

VOCAB, SEQ = 128, 24
FAMILIES = tuple(ADAPTERS)  # every family lapr adapts: a new family module is tested here unasked


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only spin on the shared 2-core machine (4x slower under
    load). Restored after the module, so nothing leaks into other test files."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_spec(fam: str, **over) -> dict:
    spec = dict(family=fam, hidden_size=32, num_layers=2, num_heads=2, head_k_dim=12,
                head_v_dim=16, vocab_size=VOCAB, mlp_ratio=2)
    if fam == "gated_deltanet":
        spec["num_v_heads"] = 4  # grouped value heads: 2 value heads per q/k head
    spec["use_short_conv"] = True  # GLA's default is none; the surgery must carry the q/k convs
    spec.update(over)
    return spec


def tiny_model(fam: str, seed: int = 0, norm_eps: float = 0.0, qk_scale: float = 4.0,
               **over):
    """Random tiny model in float32 eval mode.

    norm_eps = 0 so that o_norm cancels the kernel's d_k**-0.5 scale exactly (surgery doc:
    random tiny models have ms(o) down to ~1e-10 at some positions, where even eps = 1e-12
    shows); q/k/v proj scaled so attention is not negligible; q/k conv kernels random and
    distinct per channel (bias too when conv_bias=True).
    """
    import fla.models  # noqa: F401
    from transformers import AutoModelForCausalLM

    spec = tiny_spec(fam, **over)
    model = build_model(spec, seed=seed)
    config = model.config
    config.norm_eps = norm_eps
    for key in ("qk_activation", "conv_bias"):
        if key in over:
            setattr(config, key, over[key])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for view in family(model).attention(model):
            view.q_proj.weight.mul_(qk_scale)
            view.k_proj.weight.mul_(qk_scale)
            view.v_proj.weight.mul_(qk_scale)   # larger o, so o_norm's eps is negligible
            for conv in (view.q_conv, view.k_conv):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.5)
                if conv.bias is not None:
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)
    return model


def tokens(n: int = 2, seq: int = SEQ, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


def make_calib(model, batches: int = 2, seq: int = SEQ, rows: int = 40, seed: int = 0) -> dict:
    """calib.pt contents (LAYOUT.md format) collected with hooks on `model`."""
    views = family(model).attention(model)
    acts = {v.index: {"q": [], "k": [], "x2": 0.0, "n": 0} for v in views}
    hooks = []
    for view in views:
        store = acts[view.index]

        def pre(_, args, store=store):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            store["x2"] = store["x2"] + x.square().sum(0)
            store["n"] += x.shape[0]

        def post(name, heads, d_k, store):
            def hook(_, __, out):
                y = out[0] if isinstance(out, tuple) else out
                store[name].append(y.detach().reshape(-1, heads, d_k).transpose(0, 1))
            return hook

        hooks.append(view.q_proj.register_forward_pre_hook(pre))
        hooks.append(view.q_conv.register_forward_hook(
            post("q", view.num_heads, view.head_k_dim, store)))
        hooks.append(view.k_conv.register_forward_hook(
            post("k", view.num_heads, view.head_k_dim, store)))
    model.zero_grad()
    for b in range(batches):
        x = tokens(2, seq, seed=seed + b)
        logits = model(x).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                          x[:, 1:].reshape(-1)).backward()
    for h in hooks:
        h.remove()
    layers = []
    for view in views:
        store = acts[view.index]
        q, k = torch.cat(store["q"], 1), torch.cat(store["k"], 1)
        shape = (view.num_heads, view.head_k_dim, -1)
        # pca's statistics: centred covariance of the L2-normalised keys over all tokens
        unit = torch.nn.functional.normalize(k.double(), dim=-1)
        centred = unit - unit.mean(1, keepdim=True)
        layers.append({
            "input_rms": (store["x2"] / store["n"]).sqrt().float(),
            "q_act": q[:, :rows].float().contiguous(), "k_act": k[:, :rows].float().contiguous(),
            "q_grad": view.q_proj.weight.grad.reshape(shape).float().clone(),
            "k_grad": view.k_proj.weight.grad.reshape(shape).float().clone(),
            "state_norm": torch.ones(view.num_v_heads),
            "k_norm_mean": unit.mean(1).float(),
            "k_norm_cov": (centred.mT @ centred / (unit.shape[1] - 1)).float(),
        })
    model.zero_grad(set_to_none=True)
    return {"meta": {"model": "tiny", "n_tokens": batches * 2 * seq, "seq_len": seq,
                     "rows": rows, "seed": seed, "family": model.config.model_type},
            "layers": layers}


def make_conv_linear_and_shared(model) -> None:
    """q/k short convs: no activation and one kernel (and bias) per head, shared by its channels, and
    a key-wise gate (GLA) with one row per head: the setting in which the PCA surgery is exact
    (module docs of lapr.pruning.surgery and lapr.models.gla)."""
    with torch.no_grad():
        fam = family(model)
        for view in fam.attention(model):
            for conv in (view.q_conv, view.k_conv):
                conv.activation = None
                w = conv.weight.reshape(view.num_heads, view.head_k_dim, -1)
                w.copy_(w[:, :1].expand_as(w).clone())
            for module, kind in fam.key_channel_modules(view):
                if kind == "gate":
                    for t in (module.weight, module.bias):
                        if t is not None:
                            rows = t.reshape(view.num_heads, view.head_k_dim, -1)
                            rows.copy_(rows[:, :1].expand_as(rows).clone())
