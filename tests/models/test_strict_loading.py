"""load_model is strict: a hub-shaped checkpoint with a missing or an unexpected tensor is refused
(ValueError naming the tensors and the folder), not randomly initialised with a warning.

The folder is shaped like fla-hub/delta_net-1.3B-100B: its config.json has that checkpoint's keys
(including norm_first and the old torch_dtype, which fla 0.6.0 / transformers 5 do not write
themselves), shrunk (hidden 64, 2 layers, 2 heads, d_k = d_v = 32, small vocab); the full-size
config gives the hub model's 1,365,677,056 parameters under fla 0.6.0 (checked on the meta device).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json

import pytest
import torch

from lapr.models import load_model

# fla-hub/delta_net-1.3B-100B's config.json keys (hidden 2048, 24 layers, 16 heads,
# d_k = d_v = 2048 * expand / 16 = 128, use_gate false, untied lm_head, Llama vocab)
HUB_CONFIG = {
    "architectures": ["DeltaNetForCausalLM"], "attn_mode": "chunk", "bos_token_id": 1,
    "conv_size": 4, "eos_token_id": 2, "expand_k": 1, "expand_v": 1, "fuse_cross_entropy": True,
    "hidden_act": "swish", "hidden_ratio": 4, "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": None, "max_position_embeddings": 2048, "model_type": "delta_net",
    "norm_eps": 1e-06, "norm_first": False, "num_heads": 16, "num_hidden_layers": 24,
    "qk_activation": "silu", "qk_norm": "l2", "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_beta": True,
    "use_cache": True, "use_gate": False, "use_output_norm": True, "use_short_conv": True,
    "vocab_size": 32000,
}
SHRUNK = {**HUB_CONFIG, "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2,
          "vocab_size": 256}
DROPPED = "model.layers.1.attn.k_proj.weight"
EXTRA = "model.layers.0.attn.k_scale"


def _config(values: dict):
    from fla.models.delta_net import DeltaNetConfig

    return DeltaNetConfig(**{k: v for k, v in values.items()
                             if k not in ("architectures", "model_type", "transformers_version")})


def _write(path, model, config: dict, tensors: dict | None = None):
    """save_pretrained, then the hub's config.json; `tensors` replaces model.safetensors."""
    from safetensors.torch import save_file

    model.save_pretrained(path)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    if tensors is not None:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory):
    """(saved model, folder, its tensors) for the shrunk hub config."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(SHRUNK)).float().eval()
    path = _write(tmp_path_factory.mktemp("hub") / "delta_net-1.3B-100B-shrunk", model, SHRUNK)
    return model, path, load_file(str(path / "model.safetensors"))


def test_full_size_config_is_the_hub_model():
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_config(HUB_CONFIG))
    attn = model.model.layers[0].attn
    assert (attn.head_k_dim, attn.head_v_dim, attn.use_gate) == (128, 128, False)
    assert sum(p.numel() for p in model.parameters()) == 1_365_677_056


def test_intact_hub_folder_loads_and_equals_the_saved_model(hub_like):
    model, path, tensors = hub_like
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["norm_first"] is False and cfg["torch_dtype"] == "bfloat16"
    assert "lm_head.weight" in tensors  # untied, as the hub model
    loaded = load_model(path, "cpu", torch.float32)
    assert loaded.model.layers[0].attn.head_k_dim == 32
    mine, theirs = model.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    ids = torch.arange(12)[None]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


@pytest.mark.parametrize("kind,named,absent", [
    ("missing", DROPPED, "unexpected"),       # one tensor removed from the file
    ("unexpected", EXTRA, "missing"),         # one tensor the model does not have
])
def test_missing_or_unexpected_tensor_is_refused(hub_like, tmp_path, kind, named, absent):
    model, _, tensors = hub_like
    edited = ({k: v for k, v in tensors.items() if k != DROPPED} if kind == "missing"
              else {**tensors, EXTRA: torch.ones(2)})
    path = _write(tmp_path / kind, model, SHRUNK, edited)
    with pytest.raises(ValueError) as err:
        load_model(path, "cpu", torch.float32)
    msg = str(err.value)
    assert named in msg and f"1 {kind} tensor" in msg and str(path) in msg
    assert absent not in msg.replace(str(path), "")  # the folder's name holds the test's name


def test_many_and_misshapen_tensors_are_counted(hub_like, tmp_path):
    model, _, tensors = hub_like
    kept = {k: v for k, v in tensors.items() if ".layers.1." not in k}
    kept["model.norm.weight"] = torch.ones(7)
    path = _write(tmp_path / "many", model, SHRUNK, kept)
    with pytest.raises(ValueError) as err:
        load_model(path, "cpu", torch.float32)
    msg = str(err.value)
    n = sum(".layers.1." in k for k in tensors)
    assert f"{n} missing tensor(s)" in msg and f"({n - 5} more)" in msg
    assert "model.norm.weight (7,) vs (64,)" in msg


def test_tied_checkpoint_without_lm_head_loads(tmp_path):
    """lm_head.weight is tied to the embeddings (fla's _tied_weights_keys): not in the file,
    and not a missing tensor."""
    from transformers import AutoModelForCausalLM

    tied = {**SHRUNK, "tie_word_embeddings": True}
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(_config(tied)).float().eval()
    assert model._tied_weights_keys == {"lm_head.weight": "model.embeddings.weight"}
    path = _write(tmp_path / "tied", model, tied)
    from safetensors.torch import load_file

    assert "lm_head.weight" not in load_file(str(path / "model.safetensors"))
    loaded = load_model(path, "cpu", torch.float32)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embeddings.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, model.model.embeddings.weight)
