"""Head removal: masking == zeroing the head's q/k/v == structural removal; state accounting."""
import pytest
import torch

from lapr.heads import apply
from lapr.models import family

from heads_helpers import tiny_model

IDS = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(0))


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("removed", [[(0, 1)], [(1, 0), (0, 2)], [(0, 0), (0, 1), (0, 2), (0, 3)]])
def test_mask_equals_zeroed_qkv(family_name, removed):
    model = tiny_model(family_name, heads=4)
    full = logits(model)
    ref = logits(apply.zero_heads(model, removed))
    with apply.masked(model, removed):
        got = logits(model)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert (got - full).abs().max() > 1e-3          # the head did contribute
    torch.testing.assert_close(logits(model), full)  # hooks gone after the context


def test_mask_removes_only_that_head(family_name):
    """The masked head's o_proj input slice is exactly zero, every other slice unchanged."""
    model = tiny_model(family_name, heads=4)
    seen = {}
    view = family(model).attention(model)[1]
    # a forward hook sees o_proj's input after every pre-hook (the mask) has run
    h = view.o_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("x", a[0].clone()))
    logits(model)
    before = seen["x"]
    with apply.masked(model, [(1, 2)]):
        logits(model)
    h.remove()
    after = seen["x"]
    d = view.head_v_dim
    assert after[..., 2 * d:3 * d].abs().max() == 0
    torch.testing.assert_close(after[..., :2 * d], before[..., :2 * d])
    torch.testing.assert_close(after[..., 3 * d:], before[..., 3 * d:])


def test_structural_equals_masked(family_name):
    model = tiny_model(family_name, heads=4)
    removed = [(0, 1), (0, 3), (1, 0), (1, 2)]
    assert apply.structural_blocker(model, removed) is None
    small = apply.remove_heads(model, removed)
    views = family(small).attention(small)
    assert [v.num_v_heads for v in views] == [2, 2]
    with apply.masked(model, removed):
        ref = logits(model)
    torch.testing.assert_close(logits(small), ref, rtol=1e-5, atol=1e-5)
    acc = apply.state_accounting(model, removed)
    assert acc["state_bytes"] == sum(v.state_bytes() for v in views)


def test_structural_roundtrip(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model("gated_deltanet", heads=4)
    small = apply.remove_heads(model, [(0, 0), (1, 3)])
    small.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(again), logits(small))


def test_application_choice(family_name):
    model = tiny_model(family_name, heads=4)
    assert apply.plan_application(model, [(0, 1), (1, 1)])[0] == "structural"
    how, why = apply.plan_application(model, [(0, 1)])
    assert how == "masked" and "differ" in why
    how, why = apply.plan_application(model, [(0, h) for h in range(4)] + [(1, h) for h in range(4)])
    assert how == "masked" and "no head" in why
    assert apply.plan_application(model, [(0, 1), (1, 1)], "masked")[0] == "masked"
    with pytest.raises(ValueError, match="structural head removal impossible"):
        apply.plan_application(model, [(0, 1)], "structural")
    with pytest.raises(ValueError, match="application"):
        apply.plan_application(model, [], "sideways")


def test_state_accounting_by_hand():
    # DeltaNet: 2 layers x 4 heads, d_k = d_v = 8, float32: 8*8*4 = 256 bytes per head
    model = tiny_model("delta_net", heads=4)
    acc = apply.state_accounting(model, [(0, 1), (1, 2), (1, 3)])
    assert acc["state_bytes_full"] == 2 * 4 * 256
    assert acc["state_bytes_saved"] == 3 * 256
    assert acc["state_bytes"] == 5 * 256
    assert acc["state_saved_frac"] == pytest.approx(3 / 8)
    assert [x["state_bytes"] for x in acc["layers"]] == [3 * 256, 2 * 256]
    # conv caches: q, k, v convs of 4 heads x 8 channels x kernel 4 x 4 bytes per layer
    assert acc["conv_bytes_full"] == 2 * 3 * 32 * 4 * 4
    assert acc["conv_bytes"] == acc["conv_bytes_full"] - 3 * 3 * 8 * 4 * 4
    # bf16 states halve everything
    assert apply.state_accounting(model, [(0, 1)], torch.bfloat16)["state_bytes_saved"] == 128


def test_state_accounting_grouped_values():
    # GDN with 2 q/k heads and 4 value heads (d_k = 8, d_v = 8): the state is per value head
    model = tiny_model("gated_deltanet", heads=2, num_v_heads=4)
    acc = apply.state_accounting(model, [(0, 0)])
    assert acc["state_bytes_full"] == 2 * 4 * 8 * 8 * 4
    assert acc["state_bytes_saved"] == 8 * 8 * 4
    assert "grouped" in apply.structural_blocker(model, [(0, 0), (1, 0)])
    # removing one value head of a group: only its v is zeroed; masking still matches
    ref = logits(apply.zero_heads(model, [(0, 1)]))
    with apply.masked(model, [(0, 1)]):
        torch.testing.assert_close(logits(model), ref, rtol=1e-5, atol=1e-5)


def test_removed_validation():
    model = tiny_model("delta_net", heads=2)
    for bad, msg in (([(2, 0)], "layer 2"), ([(0, 5)], "value heads"), ([(0, 0), (0, 0)], "twice"),
                     (["x"], "pairs")):
        with pytest.raises(ValueError, match=msg):
            apply.check_removed(model, bad)
