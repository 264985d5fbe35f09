"""lapr.models.weights: safetensors files checked before loading, and fingerprinted."""
import math
import shutil

import pytest
import torch

from lapr.models import build_model, load_model
from lapr.models import weights as W

SPEC = dict(family="delta_net", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=8, head_v_dim=16,
            mlp_ratio=2, vocab_size=128)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("w")
    build_model(SPEC, seed=0).save_pretrained(root / "one")
    build_model(SPEC, seed=0).save_pretrained(root / "sharded", max_shard_size="20KB")
    build_model(SPEC, seed=1).save_pretrained(root / "other")
    return root


def test_fingerprint_follows_the_weights_not_the_path(ckpts, tmp_path):
    copy = shutil.copytree(ckpts / "one", tmp_path / "copy")
    fp = W.fingerprint(ckpts / "one")
    assert fp == W.fingerprint(copy) and len(fp) == 64
    assert W.fingerprint(ckpts / "other") != fp
    assert W.fingerprint(tmp_path) is None                 # no safetensors: nothing to compare
    assert len(W.weight_files(ckpts / "sharded")) > 1 and W.fingerprint(ckpts / "sharded")


def test_a_damaged_shard_is_named(ckpts, tmp_path):
    d = shutil.copytree(ckpts / "sharded", tmp_path / "sharded")
    shard = W.weight_files(d)[1]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match=rf"^{shard}: truncated or corrupt safetensors file \(its header "
                                         rf"declares \d+ bytes, the file has \d+\)$"):
        load_model(d, "cpu")
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=rf"^{shard}: weights file missing$"):
        load_model(d, "cpu")


def test_inf_weights_are_refused(ckpts, tmp_path):
    model = load_model(ckpts / "one", "cpu")
    with torch.no_grad():
        model.model.layers[1].attn.o_proj.weight[3, 1] = -math.inf
    model.save_pretrained(tmp_path / "inf")
    with pytest.raises(ValueError, match=r"/inf/model.safetensors: tensor model.layers.1.attn.o_proj.weight "
                                         r"holds 1 non-finite "):
        load_model(tmp_path / "inf", "cpu")
