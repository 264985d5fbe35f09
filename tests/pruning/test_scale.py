"""The query scale d_k**-0.5 -> d_k'**-0.5 on a TRAINED checkpoint (surgery doc, "Scale").

The embedded checkpoints' weights are not in the repository, so a tiny DeltaNet / GDN with the
embedded models' layer settings (output gate, norm_eps 1e-6, SiLU short convs) is trained here
for a few dozen steps on the shipped Gutenberg text (~4 s each on one core). Trained, its
attention outputs are small enough that o_norm's eps does not absorb the scale change: the
pruned model differs from the zeroed parent at the parent's scale by a clear margin, and
equals it to round-off at the pruned scale. The pruning stage records both numbers.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import math

import pytest
import torch
from pruning_helpers import one_thread  # noqa: F401

from lapr.models import build_model, family, load_model
from lapr.pruning import stage
from lapr.pruning.select import choose
from lapr.pruning.surgery import prune_channels, scale_check, zero_channels

D_K, KEPT, STEPS = 32, 16, 40


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def trained(fam: str):
    """A tiny model trained for STEPS AdamW steps on Gutenberg text (gutenberg-bpe-8k ids)."""
    from lapr.data import encode_corpus, load_tokenizer, train_batches

    ids = encode_corpus("gutenberg_valid", load_tokenizer("gutenberg-bpe-8k"),
                        max_chars=200_000, progress=False)
    spec = dict(family=fam, hidden_size=64, num_layers=2, num_heads=2, head_k_dim=D_K,
                head_v_dim=32, vocab_size=8192, mlp_ratio=2, use_gate=True)
    model = build_model(spec, seed=0).float()
    assert model.config.norm_eps == 1e-6  # the embedded checkpoints' value
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = train_batches(ids, 4, 65, seed=0)
    model.train()
    for step in range(STEPS):
        x = next(batches)
        logits = model(x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 x[:, 1:].reshape(-1))
        if step == 0:
            first = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.5, (first, loss.item())  # it did learn something
    return model.eval(), torch.from_numpy(ids[1000:1064].astype("int64"))[None]


def reference(parent, keep, tokens, kept=None):
    """Zeroed parent's logits, at the parent's scale or (kept given) at d_k'**-0.5 -- set by
    scaling the kernel output into o_norm directly here, independently of rescaled_query."""
    zeroed = zero_channels(parent, keep)
    handles = []
    if kept is not None:
        c = math.sqrt(D_K / kept)
        handles = [v.module.o_norm.register_forward_pre_hook(lambda m, a: (a[0] * c, *a[1:]))
                   for v in family(zeroed).attention(zeroed)]
    with torch.no_grad():
        out = zeroed(tokens).logits
    for h in handles:
        h.remove()
    return out


@pytest.fixture(scope="module")
def deltanet_dir(tmp_path_factory):
    model, text = trained("delta_net")
    path = tmp_path_factory.mktemp("trained") / "delta_net"
    model.save_pretrained(path)
    return path, text


def test_stage_records_the_measured_scale_error(deltanet_dir, tmp_path):
    src, text = deltanet_dir
    out = tmp_path / "l1" / "0.5"
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    stage.run(parser.parse_args(["--model", str(src), "--method", "l1", "--ratio", "0.5",
                                 "--out", str(out)]))
    scale = json.loads((out / "pruning.json").read_text())["scale"]
    assert scale["before"] == pytest.approx(D_K ** -0.5) and scale["after"] == pytest.approx(
        KEPT ** -0.5)
    assert scale["output_factor"] == pytest.approx(math.sqrt(2)) and scale["tokens"] == [1, 64]
    assert "eps" in scale["note"]

    parent, pruned = load_model(src, "cpu", torch.float32), load_model(out, "cpu", torch.float32)
    record = json.loads((out / "pruning.json").read_text())
    keep = [torch.tensor(layer["kept"]) for layer in record["layers"]]
    ids = torch.randint(0, 8192, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = pruned(ids).logits
    e_parent = _rel(got, reference(parent, keep, ids))
    e_pruned = _rel(got, reference(parent, keep, ids, kept=KEPT))
    print(f"\ntrained delta_net, d_k {D_K} -> {KEPT}: E_parent {e_parent:.3g}, "
          f"E_pruned {e_pruned:.3g} (recorded {scale['rel_logit_error_parent_scale']:.3g}, "
          f"{scale['rel_logit_error_pruned_scale']:.3g})")
    # what the stage records is this comparison
    assert scale["rel_logit_error_parent_scale"] == pytest.approx(e_parent, rel=1e-3)
    assert scale["rel_logit_error_pruned_scale"] < 1e-5 and e_pruned < 1e-5
    # the output norm does NOT absorb the scale to round-off (the old docstring's claim)
    assert e_parent > 1e-3 > 100 * e_pruned
    # ... also on real text
    with torch.no_grad():
        got = pruned(text).logits
    assert _rel(got, reference(parent, keep, text)) > 1e-3
    assert _rel(got, reference(parent, keep, text, kept=KEPT)) < 1e-5


def test_scale_check_gdn_eps_is_the_mechanism():
    parent, text = trained("gated_deltanet")
    keep = choose(parent, "l1", KEPT, None, 0)
    pruned = prune_channels(parent, keep)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    check = scale_check(parent, pruned, keep, text)
    # zeroed in place and restored bit for bit
    assert all(torch.equal(v, parent.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        got = pruned(text).logits
    print(f"\ntrained gated_deltanet: E_parent {check['rel_logit_error_parent_scale']:.3g}, "
          f"E_pruned {check['rel_logit_error_pruned_scale']:.3g}")
    assert check["rel_logit_error_parent_scale"] == pytest.approx(
        _rel(got, reference(parent, keep, text)), rel=1e-3)
    assert check["rel_logit_error_pruned_scale"] < 1e-5
    assert check["rel_logit_error_parent_scale"] > 1e-3
    # with o_norm's eps set to 0 the parent's scale is absorbed too: eps is the whole effect
    for model in (parent, pruned):
        for view in family(model).attention(model):
            view.module.o_norm.eps = 0.0
    assert scale_check(parent, pruned, keep, text)["rel_logit_error_parent_scale"] < 1e-5


def test_scale_check_runs_cpu_copies_where_fla_kernels_are_installed():
    """On a GPU machine lapr.backends.auto() keeps fla's Triton kernels, which cannot read CPU tensors,
    while the prune stage checks its surgery on CPU copies (the 2 x H200 gpu-profile run failed every
    prune job so: "Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)"). Here fla's
    kernels are put back as on that machine; the check must still run, and leave them installed."""
    from lapr import backends

    spec = dict(family="delta_net", hidden_size=64, num_layers=2, num_heads=2, head_k_dim=D_K, head_v_dim=32,
                vocab_size=256, mlp_ratio=2)
    model = build_model(spec, seed=0).float().eval()
    keep = choose(model, "l2", KEPT, None, 0)
    pruned = prune_channels(model, keep)
    backends.use_cpu_backend(False)  # fla's kernels, as auto() leaves them with CUDA present
    try:
        assert not backends.cpu_backend_active()
        with pytest.raises(Exception):  # what the GPU machine hit: fla's kernels on CPU tensors fail
            model(torch.zeros(1, 8, dtype=torch.long))
        out = scale_check(model, pruned, keep)
        assert not backends.cpu_backend_active()  # fla's kernels back after the check
    finally:
        backends.use_cpu_backend(True)
    assert out["rel_logit_error_pruned_scale"] < 1e-5
