"""Segment-wise state capture equals a slow token-by-token reference through the model's cache.

Reference: the same model fed one token at a time with fla's cache (the decode path), the state
read after every token. Both run in float32 on the CPU backend; they differ only in how the
sequence is split into kernel calls (chunked prefill vs single-token steps), so they agree to
float32 round-off: max |diff| <= 1e-5 * max |state| (observed ~1e-7).
"""
import pytest
import torch
from profiling_helpers import tiny_model
from fla.models.utils import Cache

from lapr.models import family
from lapr.profiling.capture import capture_states, check_positions, log_positions

RTOL = 1e-5


def token_by_token(model, ids, positions):
    fam = family(model)
    views = fam.attention(model)
    cache, out = Cache(), {v.index: [] for v in views}
    with torch.no_grad():
        for t in range(max(positions)):
            model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            if t + 1 in positions:
                for v in views:
                    out[v.index].append(fam.state_from_cache(cache[v.module.layer_idx]).float().clone())
    return {k: torch.stack(s, 2) for k, s in out.items()}


def assert_close(got, ref):
    scale = ref.abs().max().item()
    assert scale > 1e-3  # states are not trivially zero
    err = (got - ref).abs().max().item()
    assert err <= RTOL * scale, f"max |diff| {err:.3g} > {RTOL} * {scale:.3g}"


T_REF = 70  # > 64: a segment longer than one chunk takes the chunked (not the recurrent) path


@pytest.fixture(scope="module", params=["delta_net", "gated_deltanet"])
def reference(request):
    """(model, ids [2, T_REF], states after every token {layer: [2, HV, T_REF, d_k, d_v]})."""
    model = tiny_model(request.param)
    ids = torch.randint(0, 256, (2, T_REF), generator=torch.Generator().manual_seed(1))
    return model, ids, token_by_token(model, ids, list(range(1, T_REF + 1)))


METHODS = ["single_pass", "segments"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("positions", [None, [5, 17, 40], [1, 66, 70], [64, 65]])
def test_capture_equals_token_by_token(reference, positions, method):
    model, ids, ref = reference
    positions = positions or log_positions(T_REF, 12)
    got = capture_states(model, ids, positions, method=method)
    views = family(model).attention(model)
    assert sorted(got) == [v.index for v in views]
    idx = torch.tensor(positions) - 1
    for v in views:
        assert got[v.index].shape == (2, v.num_v_heads, len(positions), v.head_k_dim, v.head_v_dim)
        assert got[v.index].dtype == torch.float32
        assert_close(got[v.index], ref[v.index][:, :, idx])


@pytest.mark.parametrize("method", METHODS)
def test_final_state_equals_one_full_forward(family_name, method):
    # the last captured state equals the cache state of a single full-length forward
    model = tiny_model(family_name)
    ids = torch.randint(0, 256, (1, 70), generator=torch.Generator().manual_seed(2))
    got = capture_states(model, ids, [3, 30, 70], method=method)
    cache = Cache()
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    fam = family(model)
    for v in fam.attention(model):
        assert_close(got[v.index][:, :, -1], fam.state_from_cache(cache[v.module.layer_idx]).float())


def test_gdn_gate_matters():
    # with GDN's decay switched off (A_log -> -inf: g = 0) the states change: the capture sees the gate
    model = tiny_model("gated_deltanet")
    ids = torch.randint(0, 256, (1, 30), generator=torch.Generator().manual_seed(3))
    with_gate = capture_states(model, ids, [30])[0]
    with torch.no_grad():
        for v in family(model).attention(model):
            v.gates["A_log"].fill_(-30.0)
    no_gate = capture_states(model, ids, [30])[0]
    assert (with_gate - no_gate).abs().max() > 1e-2 * with_gate.abs().max()


def test_single_pass_restores_the_ops_and_rejects_unknown_methods():
    import fla.layers.delta_net as dn

    before = dn.chunk_delta_rule
    capture_states(tiny_model("delta_net"), torch.zeros(1, 8, dtype=torch.long), [4, 8])
    assert dn.chunk_delta_rule is before
    with pytest.raises(ValueError, match="unknown capture method"):
        capture_states(tiny_model("delta_net"), torch.zeros(1, 8, dtype=torch.long), [8], method="tokens")


def test_model_mode_restored_and_no_grad():
    model = tiny_model("delta_net").train()
    states = capture_states(model, torch.zeros(1, 8, dtype=torch.long), [4, 8])
    assert model.training and not states[0].requires_grad


def test_log_positions():
    for T, n in [(2048, 32), (64, 32), (32, 32), (1000, 5), (10, 2), (7, 1)]:
        pos = log_positions(T, n)
        assert len(pos) >= n and len(set(pos)) == len(pos) and pos == sorted(pos)
        assert pos[-1] == T and pos[0] >= 1 and all(isinstance(p, int) for p in pos)
    assert log_positions(32, 32) == list(range(1, 33))
    pos = log_positions(2048, 32)
    ratios = [b / a for a, b in zip(pos[10:], pos[11:])]
    assert max(ratios) < 1.5  # geometric spacing once rounding no longer merges counts
    for bad in [(0, 1), (10, 0), (10, 11)]:
        with pytest.raises(ValueError):
            log_positions(*bad)


@pytest.mark.parametrize("positions,match", [
    ([], "empty"), ([0, 3], "1-based"), ([3, 3], "increasing"), ([5, 2], "increasing"),
    ([3, 41], "beyond"), ([2.5], "integers"),
])
def test_position_errors(positions, match):
    with pytest.raises(ValueError, match=match):
        check_positions(positions, 40)
    model = tiny_model("delta_net")
    with pytest.raises(ValueError, match=match):
        capture_states(model, torch.zeros(1, 40, dtype=torch.long), positions)


def test_input_shape_error():
    with pytest.raises(ValueError, match="B, T"):
        capture_states(tiny_model("delta_net"), torch.zeros(40, dtype=torch.long), [4])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and fla's Triton kernels")
@pytest.mark.parametrize("method", METHODS)
def test_capture_cuda_bf16_matches_token_by_token(family_name, method):
    # fla kernels in bf16: the two paths round differently (chunk vs recurrent kernels, bf16
    # activations between layers), so agreement is to bf16 precision: 5e-2 of the state scale
    model = tiny_model(family_name).to("cuda", torch.bfloat16)
    ids = torch.randint(0, 256, (2, 200), generator=torch.Generator().manual_seed(1))
    positions = log_positions(200, 16)
    got = capture_states(model, ids, positions, method=method)
    ref = token_by_token(model, ids.cuda(), positions)
    for k in got:
        assert got[k].is_cuda and got[k].dtype == torch.float32
        scale = ref[k].abs().max().item()
        assert (got[k] - ref[k]).abs().max().item() <= 5e-2 * scale


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and fla's Triton kernels")
def test_cuda_single_pass_reads_fla_state_pass(family_name):
    # on CUDA the single pass is fla's own forward with its state pass wrapped (reader 'fla'); the
    # same tokens through lapr's op (reader 'lapr') differ only by bf16 activations between layers
    from lapr import backends
    from lapr.profiling.capture import _states_op, reader

    model = tiny_model(family_name).to("cuda", torch.bfloat16)
    assert reader(model) == "fla"
    ids = torch.randint(0, 256, (2, 300), generator=torch.Generator().manual_seed(2)).cuda()
    positions = log_positions(300, 20)
    got = capture_states(model, ids, positions)
    sink = []
    fam = family(model)
    with torch.no_grad(), backends.swapped(_states_op(fam, [p - 1 for p in positions], sink),
                                           backends.attention_ops(fam)):
        model.base_model(input_ids=ids, use_cache=False)
    for layer, ref in zip(sorted(got), sink):
        assert got[layer].shape == ref.shape
        assert (got[layer] - ref).abs().max().item() <= 5e-2 * ref.abs().max().item()
