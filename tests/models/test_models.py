"""Models layer: build, adapters, save/reload with stock fla, cached generation == full forward."""
import pytest
import torch

from lapr.models import attention_layers, build_model, family, load_model

SPECS = {
    "delta_net": dict(family="delta_net", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=16,
                      head_v_dim=16, vocab_size=97, mlp_ratio=2),
    "gated_deltanet": dict(family="gated_deltanet", hidden_size=32, num_layers=2, num_heads=2,
                           num_v_heads=4, head_k_dim=12, head_v_dim=8, vocab_size=97, mlp_ratio=2),
}


@pytest.mark.parametrize("name", SPECS)
def test_adapter_exposes_layer_geometry(name):
    spec = SPECS[name]
    model = build_model(spec, seed=0)
    views = attention_layers(model)
    assert len(views) == spec["num_layers"]
    v = views[0]
    assert v.head_k_dim == spec["head_k_dim"] and v.head_v_dim == spec["head_v_dim"]
    assert v.num_heads == spec["num_heads"]
    assert v.q_proj.out_features == v.k_proj.out_features == spec["num_heads"] * spec["head_k_dim"]
    assert v.v_proj.out_features == v.num_v_heads * spec["head_v_dim"]
    assert v.q_conv is not None and v.q_conv.weight.shape[0] == v.q_proj.out_features
    assert v.state_shape == (v.num_v_heads, spec["head_k_dim"], spec["head_v_dim"])
    assert v.state_bytes(torch.bfloat16) == 2 * v.num_v_heads * spec["head_k_dim"] * spec["head_v_dim"]


@pytest.mark.parametrize("name", SPECS)
def test_save_reload_with_stock_auto_class(name, tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_model(SPECS[name], seed=1).eval()
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert load_model(tmp_path, device="cpu").config.model_type == name


@pytest.mark.parametrize("name", SPECS)
def test_cached_generation_equals_full_forward(name):
    """Greedy generate with the recurrent cache == argmax of one full forward on the result."""
    model = build_model(SPECS[name], seed=3).eval()
    prompt = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=9, do_sample=False, use_cache=True,
                             output_scores=True, return_dict_in_generate=True)
        full = model(out.sequences).logits
    steps = torch.stack(out.scores, 1)  # logits of each generated token, computed with the cache
    n = steps.shape[1]
    # float32 chunked vs step-wise recurrence: same math, different summation order
    torch.testing.assert_close(steps, full[:, -n - 1:-1], rtol=1e-4, atol=1e-4)


def test_state_from_cache_has_key_dim_first():
    spec = SPECS["gated_deltanet"]
    model = build_model(spec, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 97, (1, 7)), use_cache=True)
    state = family(model).state_from_cache(out.past_key_values[0])
    assert state.shape == (1, 4, spec["head_k_dim"], spec["head_v_dim"])


def test_unknown_family_and_missing_checkpoint_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no lapr adapter"):
        family("mamba2")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
