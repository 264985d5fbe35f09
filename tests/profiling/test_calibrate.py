"""Calibration statistics against what the layer computes, recomputed by hand on tiny models."""
import pytest
import torch
import torch.nn.functional as F
from profiling_helpers import tiny_model, tiny_spec
from fla.models.utils import Cache

from lapr.models import family
from lapr.profiling.calibrate import calibrate, calibration_batches, calibration_rows
from lapr.profiling.capture import capture_states

TOL = dict(rtol=1e-4, atol=1e-6)


def batches(n=2, b=2, length=24, seed=0):
    return torch.randint(0, 256, (n, b, length), generator=torch.Generator().manual_seed(seed))


def proj_inputs(model, data):
    """x fed to each layer's q_proj, per layer: [n*B*L, D] in calibration row order."""
    views = family(model).attention(model)
    xs = {v.index: [] for v in views}
    hooks = [v.q_proj.register_forward_pre_hook(lambda m, a, i=v.index: xs[i].append(a[0].flatten(0, -2)))
             for v in views]
    with torch.no_grad():
        for x in data:
            model(input_ids=x, use_cache=False)
    for h in hooks:
        h.remove()
    return {i: torch.cat(x) for i, x in xs.items()}


def causal_conv_silu(z, weight, seq_len):
    """Depthwise causal conv + silu by hand: y[t] = silu(sum_j w[:, j] * z[t - (W-1) + j])."""
    W = weight.shape[-1]
    z = z.view(-1, seq_len, z.shape[-1])                       # [B, L, C]
    zp = F.pad(z, (0, 0, W - 1, 0))
    y = sum(weight[:, 0, j] * zp[:, j:j + seq_len] for j in range(W))
    return F.silu(y).flatten(0, 1)


def conv_model(family_name):
    """The family's tiny model with q/k short convs (GLA's default has none)."""
    return tiny_model(family_name, use_short_conv=True)


def test_contract_shapes_and_values(family_name):
    model = conv_model(family_name)
    data = batches()
    calib = calibrate(model, data, rows=10_000, seed=0, model_name="tiny")   # rows >= tokens: all rows
    meta = calib["meta"]
    assert meta == {**meta, "model": "tiny", "n_tokens": 96, "seq_len": 24, "rows": 96, "seed": 0,
                    "family": family_name}
    views = family(model).attention(model)
    xs = proj_inputs(model, data)
    assert len(calib["layers"]) == len(views)
    for v, layer in zip(views, calib["layers"]):
        H, dk, D, HV = v.num_heads, v.head_k_dim, v.q_proj.in_features, v.num_v_heads
        assert set(layer) == {"input_rms", "q_act", "k_act", "q_grad", "k_grad", "state_norm",
                              "k_norm_mean", "k_norm_cov"}
        shapes = {"input_rms": (D,), "q_act": (H, 96, dk), "k_act": (H, 96, dk), "q_grad": (H, dk, D),
                  "k_grad": (H, dk, D), "state_norm": (HV,), "k_norm_mean": (H, dk),
                  "k_norm_cov": (H, dk, dk)}
        for key, shape in shapes.items():
            t = layer[key]
            assert tuple(t.shape) == shape and t.dtype == torch.float32 and t.device.type == "cpu", key
        x = xs[v.index]
        torch.testing.assert_close(layer["input_rms"], x.square().mean(0).sqrt(), **TOL)
        for act, proj, conv in (("q_act", v.q_proj, v.q_conv), ("k_act", v.k_proj, v.k_conv)):
            want = causal_conv_silu(x @ proj.weight.T, conv.weight, 24)        # [N, H*dk]
            want = want.view(-1, H, dk).permute(1, 0, 2)
            assert want.abs().max() > 1e-3
            torch.testing.assert_close(layer[act], want, **TOL)


def test_post_norm_key_statistics_are_centred_over_all_tokens(family_name):
    # paper A's PCA statistics (LAP pca.py: l2_norm'd keys, centred covariance over every token)
    model = conv_model(family_name)
    with torch.no_grad():  # larger pre-SiLU keys: SiLU then gives them a clearly non-zero mean
        for v in family(model).attention(model):
            v.k_proj.weight.mul_(20)
    data = batches()
    layers = calibrate(model, data, rows=10_000)["layers"]          # k_act holds every token
    sub = calibrate(model, data, rows=7, seed=3)["layers"]
    for layer, small in zip(layers, sub):
        k = layer["k_act"].double()                                    # [H, 96, d_k], pre-norm
        unit = k / (k.square().sum(-1, keepdim=True) + 1e-6).sqrt()     # fla's L2 norm by hand
        if family_name == "gla":
            unit = k                                                    # GLA does not normalise keys
        mean = unit.mean(1)
        centred = unit - mean[:, None]
        cov = centred.mT @ centred / (unit.shape[1] - 1)
        torch.testing.assert_close(layer["k_norm_mean"], mean.float(), **TOL)
        torch.testing.assert_close(layer["k_norm_cov"], cov.float(), **TOL)
        # the mean is not zero (SiLU'd keys): an uncentred moment would miss TOL by far
        moment = unit.mT @ unit / unit.shape[1]
        assert (moment - cov).abs().max() > 1e-3
        for key in ("k_norm_mean", "k_norm_cov"):                     # all tokens, not the rows
            torch.testing.assert_close(small[key], layer[key], **TOL)


def test_subsampled_rows_are_the_seeded_subset(family_name):
    model = tiny_model(family_name)
    data = batches()
    full = calibrate(model, data, rows=10_000)["layers"][1]
    sub = calibrate(model, data, rows=17, seed=5)["layers"][1]
    keep = calibration_rows(96, 17, 5)
    assert len(keep) == 17 and torch.equal(keep, keep.sort().values)
    assert not torch.equal(keep, calibration_rows(96, 17, 6))
    torch.testing.assert_close(sub["q_act"], full["q_act"][:, keep], **TOL)
    torch.testing.assert_close(sub["k_act"], full["k_act"][:, keep], **TOL)
    for key in ("input_rms", "q_grad", "k_grad", "state_norm",  # independent of subsampling
                "k_norm_mean", "k_norm_cov"):
        torch.testing.assert_close(sub[key], full[key], **TOL)


def test_taylor_grads_and_state_norms(family_name):
    model = tiny_model(family_name)
    data = batches()
    flags = [p.requires_grad for p in model.parameters()]
    calib = calibrate(model, data, rows=8)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    views = family(model).attention(model)
    params = [w for v in views for w in (v.q_proj.weight, v.k_proj.weight)]
    total = [torch.zeros_like(p) for p in params]
    for x in data:  # reference: autograd of the summed per-batch mean LM loss
        grads = torch.autograd.grad(model(input_ids=x, labels=x).loss, params)
        total = [t + g for t, g in zip(total, grads)]
    for i, (v, layer) in enumerate(zip(views, calib["layers"])):
        shape = (v.num_heads, v.head_k_dim, v.q_proj.in_features)
        torch.testing.assert_close(layer["q_grad"], total[2 * i].view(shape), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(layer["k_grad"], total[2 * i + 1].view(shape), rtol=1e-4, atol=1e-7)
        assert layer["q_grad"].abs().max() > 0
    # state norms: mean over the 4 sequences of ||S_L|| per value head, from an independent capture
    final = {k: s[:, :, -1] for k, s in capture_states(model, data.flatten(0, 1), [24]).items()}
    for v, layer in zip(views, calib["layers"]):
        want = torch.linalg.matrix_norm(final[v.index]).mean(0)
        torch.testing.assert_close(layer["state_norm"], want, **TOL)


@pytest.mark.filterwarnings("ignore:ShortConvolution is crucial")
def test_without_short_conv_hooks_the_projection():
    import fla.models  # noqa: F401
    from transformers import AutoModelForCausalLM
    config = family("delta_net").config_from_spec(tiny_spec("delta_net"))
    config.use_short_conv = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    data = batches(n=1)
    layer = calibrate(model, data, rows=1000)["layers"][0]
    v = family(model).attention(model)[0]
    x = proj_inputs(model, data)[0]
    want = F.silu(x @ v.q_proj.weight.T).view(-1, v.num_heads, v.head_k_dim).permute(1, 0, 2)
    torch.testing.assert_close(layer["q_act"], want, **TOL)


def test_calibration_batches_deterministic():
    from lapr.data import load_tokenizer
    tok = load_tokenizer("gutenberg-bpe-8k")
    a = calibration_batches(tok, 2, 32, 3, seed=0, source="gutenberg_valid")
    assert a.shape == (2, 3, 32) and a.dtype == torch.long
    assert torch.equal(a, calibration_batches(tok, 2, 32, 3, seed=0, source="gutenberg_valid"))
    assert not torch.equal(a, calibration_batches(tok, 2, 32, 3, seed=1, source="gutenberg_valid"))
    with pytest.raises(ValueError, match="seq_len"):
        calibration_batches(tok, 2, 0, 3)


def test_errors():
    model = tiny_model("delta_net")
    with pytest.raises(ValueError, match="no calibration batches"):
        calibrate(model, [])
    with pytest.raises(ValueError, match="rows"):
        calibrate(model, batches(), rows=0)


def test_gla_without_conv_reads_the_projections():
    """GLA's default layer has no short conv and no q/k activation or norm: q/k enter the kernel as
    the projections' outputs (Family.qk_pre_norm / qk_norm), and the key statistics are theirs."""
    model = tiny_model("gla")
    data = batches()
    calib = calibrate(model, data, rows=10_000)
    xs = proj_inputs(model, data)
    for v, layer in zip(family(model).attention(model), calib["layers"]):
        assert v.q_conv is None
        for act, proj in (("q_act", v.q_proj), ("k_act", v.k_proj)):
            want = (xs[v.index] @ proj.weight.T).view(-1, v.num_heads, v.head_k_dim).permute(1, 0, 2)
            torch.testing.assert_close(layer[act], want, **TOL)
        torch.testing.assert_close(layer["k_norm_mean"], layer["k_act"].double().mean(1).float(), **TOL)
