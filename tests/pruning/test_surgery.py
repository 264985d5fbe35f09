"""Surgery: pruned model == unpruned model with the same channels zeroed; checkpoints reload."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from pruning_helpers import (FAMILIES, make_calib, make_conv_linear_and_shared,  # noqa: F401
                             one_thread, tiny_model, tokens)

from lapr.models import family
from lapr.pruning.channels import METHODS
from lapr.pruning.select import choose
from lapr.pruning.surgery import (conv_mismatch, prune_channels, resized_config, state_bytes,
                                  zero_channels)

KEPT = 7  # of d_k = 12
TOL = dict(rtol=1e-5, atol=2e-6)  # float32; observed max |diff| ~ 4e-7 on logits of size ~0.5


def logits(model, x=None):
    with torch.no_grad():
        return model(tokens(2, seed=9) if x is None else x).logits


def reload(model, tmp_path):
    import fla.models  # noqa: F401
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path)
    return AutoModelForCausalLM.from_pretrained(str(tmp_path)).float().eval()


@pytest.fixture(scope="module")
def models():
    out = {}
    for fam in FAMILIES:
        model = tiny_model(fam)
        out[fam] = (model, make_calib(model))
    return out


@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_selection_equals_zeroed_and_reloads(models, fam, method, tmp_path):
    model, calib = models[fam]
    keep = choose(model, method, KEPT, calib, seed=3)
    pruned = prune_channels(model, keep)
    zeroed = zero_channels(model, keep)
    base, want, got = logits(model), logits(zeroed), logits(pruned)
    assert (want - base).abs().max() > 1e-2            # the pruning does change the model
    torch.testing.assert_close(got, want, **TOL)
    views = family(pruned).attention(pruned)
    assert all(v.head_k_dim == KEPT for v in views)
    back = reload(pruned, tmp_path)
    assert type(back) is type(pruned)
    assert all(v.head_k_dim == KEPT for v in family(back).attention(back))
    torch.testing.assert_close(logits(back), got, rtol=0, atol=0)


@pytest.mark.parametrize("fam", FAMILIES)
def test_pca_exact_when_conv_linear_and_shared(models, fam, tmp_path):
    # DeltaNet: qk_activation='identity' is a stock config, so even the reload stays exact.
    # GDN and GLA always apply SiLU in their q/k conv; we switch it off on both sides of the
    # comparison (and share GLA's key-wise gate rows within a head: a per-head scalar decay).
    extra = {"qk_activation": "identity"} if fam == "delta_net" else {}
    model = tiny_model(fam, seed=1, **extra)
    make_conv_linear_and_shared(model)
    bases = choose(model, "pca", KEPT, make_calib(model), seed=0)
    assert all(r["q_conv_mismatch"] < 1e-12 and r["k_conv_mismatch"] < 1e-12
               for r in conv_mismatch(model, bases))
    pruned = prune_channels(model, bases)
    reference = zero_channels(model, bases)           # q/k projected onto span(U) per head
    if any(v.q_conv.activation for v in family(pruned).attention(pruned)):  # GDN, GLA
        make_conv_linear_and_shared(pruned)           # kernels already shared; drops the SiLU
    want, got = logits(reference), logits(pruned)
    assert (want - logits(model)).abs().max() > 1e-2
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if fam == "delta_net":
        torch.testing.assert_close(logits(reload(pruned, tmp_path)), got, rtol=0, atol=0)


@pytest.mark.parametrize("fam", FAMILIES)
def test_pca_default_model_rotation_rules_and_reload(models, fam, tmp_path):
    model, calib = models[fam]
    bases = choose(model, "pca", KEPT, calib)
    pruned = prune_channels(model, bases)
    for old, new, u in zip(family(model).attention(model), family(pruned).attention(pruned),
                           bases):
        h, d_k = old.num_heads, old.head_k_dim
        for a, b in ((old.q_proj, new.q_proj), (old.k_proj, new.k_proj)):
            want = u.double().mT @ a.weight.double().reshape(h, d_k, -1)
            torch.testing.assert_close(b.weight.double().reshape(h, KEPT, -1), want,
                                       rtol=1e-6, atol=1e-7)
        for a, b in ((old.q_conv, new.q_conv), (old.k_conv, new.k_conv)):
            want = (u.double() ** 2).mT @ a.weight.double().reshape(h, d_k, -1)
            torch.testing.assert_close(b.weight.double().reshape(h, KEPT, -1), want,
                                       rtol=1e-6, atol=1e-7)
            assert b.activation == a.activation
    # distinct kernels + SiLU: an approximation, and the record says how far from exact
    assert all(r["q_conv_mismatch"] > 1e-3 for r in conv_mismatch(model, bases))
    got = logits(pruned)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(logits(reload(pruned, tmp_path)), got, rtol=0, atol=0)


@pytest.mark.parametrize("fam", FAMILIES)
def test_pca_with_coordinate_basis_is_selection(models, fam):
    # A basis of unit vectors (U = I[:, idx]) must reproduce channel selection exactly, SiLU
    # and distinct kernels included: checks the rotation path's bookkeeping end to end.
    model, _ = models[fam]
    keep = choose(model, "random", KEPT, seed=5)
    bases = [torch.stack([torch.eye(12)[:, row] for row in idx]) for idx in keep]
    torch.testing.assert_close(logits(prune_channels(model, bases)),
                               logits(prune_channels(model, keep)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fam", FAMILIES)
def test_everything_else_is_copied_and_input_untouched(models, fam):
    model, _ = models[fam]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    keep = choose(model, "l2", KEPT)
    pruned = prune_channels(model, keep)
    after = pruned.state_dict()
    assert before.keys() == after.keys()
    fam = family(model)
    names = {id(m): n for n, m in model.named_modules()}
    by_channel = {names[id(m)] + "." for v in fam.attention(model) for m, _ in fam.key_channel_modules(v)}
    assert any("q_proj" in n for n in by_channel) and any("k_conv1d" in n for n in by_channel)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)    # input model unchanged
        if any(key.startswith(prefix) for prefix in by_channel):
            continue
        assert torch.equal(after[key], value), key              # bit-for-bit copy
    for old, new, idx in zip(fam.attention(model), fam.attention(pruned), keep):
        # every tensor indexed by key channel (q/k proj and conv, GLA's gate rows) keeps its rows
        for (m_old, _), (m_new, _) in zip(fam.key_channel_modules(old), fam.key_channel_modules(new)):
            for t_old, t_new in ((m_old.weight, m_new.weight), (m_old.bias, m_new.bias)):
                if t_old is None:
                    continue
                rows = t_old.reshape(old.num_heads, 12, *t_old.shape[1:])
                assert torch.equal(t_new.reshape(old.num_heads, KEPT, *t_old.shape[1:]),
                                   torch.stack([rows[h, idx[h]] for h in range(old.num_heads)]))
        assert new.head_v_dim == old.head_v_dim and new.num_v_heads == old.num_v_heads
        assert new.v_proj.weight.shape == old.v_proj.weight.shape
    assert [b * 12 for b in state_bytes(pruned)] == [b * KEPT for b in state_bytes(model)]
    assert not pruned.training and pruned.config.vocab_size == model.config.vocab_size


@pytest.mark.parametrize("fam", FAMILIES)
def test_cached_decoding_matches_full_forward(models, fam):
    # conv caches and states are sized from the resized layers (config.use_cache is on, so
    # plain forwards above already ran the unfused conv path)
    model, _ = models[fam]
    pruned = prune_channels(model, choose(model, "l1", KEPT))
    x = tokens(1, 12, seed=4)
    with torch.no_grad():
        full = pruned(x).logits
        out = pruned(x[:, :8], use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values
        for t in range(8, 12):
            out = pruned(x[:, t:t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)
    # use_cache=False: GDN then takes fla's fused q/k/v-conv path, sized from the same layers
    with torch.no_grad():
        torch.testing.assert_close(pruned(x, use_cache=False).logits, full, rtol=0, atol=1e-6)


def test_gdn_value_dim_survives_float_truncation(tmp_path):
    # head_dim 64 -> 49 with head_v_dim 32: the naive expand_v = 32/49 gives
    # int(49 * (32/49)) = 31, a silently different (and unloadable) value dim.
    assert int(49 * (32 / 49)) == 31
    model = tiny_model("gated_deltanet", head_k_dim=64, head_v_dim=32, num_heads=1,
                       num_v_heads=1, num_layers=1)
    keep = [torch.arange(49).reshape(1, 49)]
    assert int(resized_config(model, 49).head_dim * resized_config(model, 49).expand_v) == 32
    pruned = prune_channels(model, keep)
    back = reload(pruned, tmp_path)
    view = family(back).attention(back)[0]
    assert (view.head_k_dim, view.head_v_dim) == (49, 32)
    torch.testing.assert_close(logits(back), logits(zero_channels(model, keep)), **TOL)


def test_bad_keep_is_rejected(models):
    model, _ = models["delta_net"]
    good = choose(model, "l1", KEPT)
    cases = [
        (good[:1], "one entry per attention layer"),
        ([good[0], good[1][:, :5]], "same number of channels"),
        ([good[0], good[1].float()], "mixes"),
        ([good[0], torch.full_like(good[1], 12)], r"\[0, 12\)"),
        ([good[0], torch.zeros_like(good[1])], "repeat"),
        ([good[0], good[1][:1]], r"\[H=2"),
        ([torch.ones(2, 12, KEPT)] * 2, "orthonormal"),
    ]
    for keep, message in cases:
        with pytest.raises(ValueError, match=message):
            prune_channels(model, keep)
