"""The `prune` stage end to end on tiny checkpoints, and its up-front input errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json

import numpy as np
import pytest
import torch
from pruning_helpers import VOCAB, make_calib, one_thread, tiny_model, tokens  # noqa: F401

from lapr.models import family
from lapr.pruning import stage
from lapr.pruning.surgery import prune_channels

TOKENIZER = {"tokenizer.json": '{"fake": true}\n', "tokenizer_config.json": '{"x": 1}\n'}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for fam in ("delta_net", "gated_deltanet"):
        model = tiny_model(fam)
        path = root / fam
        model.save_pretrained(path)
        for name, text in TOKENIZER.items():
            (path / name).write_text(text)
        torch.save(make_calib(model), root / f"{fam}-calib.pt")
        out[fam] = (path, root / f"{fam}-calib.pt")
    np.save(root / "tokens.npy", np.random.default_rng(0).integers(0, VOCAB, 4000))
    out["tokens"] = root / "tokens.npy"
    return out


def _many(value) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list | tuple) else [value])]


def args_for(model, out, method="l1", ratio="0.5", calib=None, settings=None, seed=None):
    """Parsed CLI arguments; `ratio` and `out` may be lists (several ratios in one run)."""
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    argv = ["--model", str(model), "--method", method, "--ratio", *_many(ratio),
            "--out", *_many(out), "--settings", json.dumps(settings or {})]
    if calib is not None:
        argv += ["--calib", str(calib)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    return parser.parse_args(argv)


def reload(path):
    import fla.models  # noqa: F401
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path)).float().eval()


def logits(model):
    with torch.no_grad():
        return model(tokens(2, seed=11)).logits


def test_weights_only_method_without_calib(checkpoints, tmp_path):
    src, _ = checkpoints["gated_deltanet"]
    out = tmp_path / "l1" / "0.3"
    stage.run(args_for(src, out, "l1", "0.3", settings={"multiple": 4, "methods": ["l1"]}))
    record = json.loads((out / "pruning.json").read_text())
    assert (record["d_k_before"], record["d_k_after"]) == (12, 8)  # floor(8.4)=8, multiple of 4
    assert record["ratio"] == 0.3 and record["effective_ratio"] == pytest.approx(1 / 3)
    assert record["kind"] == "selection" and record["calib"] is None
    layer = record["layers"][0]
    assert (layer["heads"], layer["value_heads"], layer["d_v"]) == (2, 4, 16)
    assert len(layer["kept"]) == 2 and all(len(row) == 8 for row in layer["kept"])
    assert layer["state_bytes_before"] == 4 * 12 * 16 * 4
    assert layer["state_bytes_after"] == 4 * 8 * 16 * 4
    assert record["state_bytes_per_sequence"]["fraction"] == pytest.approx(8 / 12)
    assert record["provenance"]["git_commit"] and "versions" in record["provenance"]
    assert (out / "provenance.json").is_file()
    for name, text in TOKENIZER.items():
        assert (out / name).read_text() == text
    assert sorted(record["tokenizer_files"]) == sorted(TOKENIZER)
    # the checkpoint reloads with stock transformers and equals in-memory surgery
    original = reload(src)
    keep = [torch.tensor(row["kept"]) for row in record["layers"]]
    back = reload(out)
    assert all(v.head_k_dim == 8 for v in family(back).attention(back))
    torch.testing.assert_close(logits(back), logits(prune_channels(original, keep)),
                               rtol=0, atol=0)
    assert not list(tmp_path.glob("l1/.*tmp"))           # nothing left from the atomic write


@pytest.mark.parametrize("method", ["pca", "pca_qk"])
def test_pca_with_calib(checkpoints, tmp_path, method):
    src, calib = checkpoints["delta_net"]
    out = tmp_path / method
    stage.run(args_for(src, out, method, 0.25, calib=calib))
    record = json.loads((out / "pruning.json").read_text())
    assert record["kind"] == "rotation" and record["d_k_after"] == 9
    assert ("centred covariance of the L2-normalised keys" in record["short_conv"]) == (method == "pca")
    assert torch.load(out / "pca_basis.pt")["method"] == method
    assert record["calib_meta"]["family"] == "delta_net"
    assert "does not commute" in record["short_conv"]
    assert all(layer["kept"] is None and layer["q_conv_mismatch"] > 0
               for layer in record["layers"])
    bases = torch.load(out / "pca_basis.pt")["bases"]
    assert tuple(bases[0].shape) == (2, 12, 9)
    back = reload(out)
    torch.testing.assert_close(logits(back), logits(prune_channels(reload(src), bases)),
                               rtol=0, atol=0)


def test_strong_rrqr_with_recovery_and_distillation(checkpoints, tmp_path):
    src, calib = checkpoints["gated_deltanet"]
    out = tmp_path / "rrqr"
    recovery = {"enabled": True, "steps": 2, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8,
                "distill": True, "seq_len": 16, "batch_size": 2, "data": str(checkpoints["tokens"])}
    stage.run(args_for(src, out, "strong_rrqr", 0.5, calib=calib, seed=7,
                       settings={"seed": 1, "recovery": recovery}))
    record = json.loads((out / "pruning.json").read_text())
    assert record["seed"] == 7                          # --seed overrides settings.seed
    assert record["recovery"]["steps_run"] == 2 and record["recovery"]["distill"] is True
    assert (out / "recovery_log.csv").read_text().startswith("step,loss,ce,kl,lr")
    pruned = prune_channels(reload(src), [torch.tensor(r["kept"]) for r in record["layers"]])
    back = reload(out)
    assert (logits(back) - logits(pruned)).abs().max() > 0   # recovery changed the weights
    assert back.config.head_dim == 6


@pytest.mark.parametrize("method,ratio,calib,settings,error,message", [
    ("magnitude", "0.5", None, {}, ValueError, "unknown pruning method 'magnitude'"),
    ("l1", "1.0", None, {}, ValueError, "strictly between 0 and 1.*'1.0'"),
    ("l1", "0", None, {}, ValueError, "strictly between 0 and 1.*'0'"),
    ("l1", "0.95", None, {}, ValueError, "ratio 0.95 leaves no channel of d_k=12"),
    ("wanda", "0.5", None, {}, ValueError, "'wanda' needs --calib"),
    ("taylor", "0.5", "missing.pt", {}, FileNotFoundError, "missing.pt"),
    ("l1", "0.5", None, {"multipel": 4}, ValueError, "^prune.multipel: unknown key; allowed: device, multiple, recovery, seed$"),
    ("l1", "0.5", None, {"recovery": {"rank": 4}}, ValueError, "^prune.recovery.rank: unknown key; allowed: "),
])
def test_bad_input_fails_before_writing(checkpoints, tmp_path, method, ratio, calib, settings,
                                        error, message):
    src, _ = checkpoints["delta_net"]
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        stage.run(args_for(src, out, method, ratio, calib=calib and tmp_path / calib,
                           settings=settings))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_missing_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        stage.run(args_for(tmp_path / "nope", tmp_path / "out"))


def test_pca_refuses_a_calib_without_post_norm_key_statistics(checkpoints, tmp_path):
    src, calib = checkpoints["delta_net"]
    old = torch.load(calib)
    for layer in old["layers"]:  # a calib.pt written before k_norm_mean / k_norm_cov existed
        del layer["k_norm_mean"], layer["k_norm_cov"]
    torch.save(old, tmp_path / "old-calib.pt")
    with pytest.raises(ValueError, match=r"needs calib layer fields \['k_norm_cov'\].*rerun `lapr profile`"):
        stage.run(args_for(src, tmp_path / "out", "pca", 0.5, calib=tmp_path / "old-calib.pt"))
    stage.run(args_for(src, tmp_path / "qk", "pca_qk", 0.5, calib=tmp_path / "old-calib.pt"))


def test_calib_for_another_model_is_rejected(checkpoints, tmp_path):
    src, _ = checkpoints["delta_net"]
    _, other = checkpoints["gated_deltanet"]
    with pytest.raises(ValueError, match="calibrated on family 'gated_deltanet'"):
        stage.run(args_for(src, tmp_path / "out", "pivoted_qr", 0.5, calib=other))


# ---- several ratios in one process ------------------------------------------------------------

RECOVERY = {"enabled": True, "steps": 2, "lr": 1e-3, "lora_r": 4, "lora_alpha": 8,
            "distill": True, "seq_len": 16, "batch_size": 2}


def checkpoint_contents(path):
    """Everything a pruned directory holds that must not depend on batching: the weights, and
    each file's text, pruning.json without its provenance (timestamps), no provenance.json."""
    from safetensors.torch import load_file

    out = {}
    for file in sorted(path.iterdir()):
        if file.name == "provenance.json":
            continue
        if file.suffix == ".safetensors":
            out[file.name] = load_file(file)
        elif file.name == "pruning.json":
            record = json.loads(file.read_text())
            assert record.pop("provenance")["git_commit"]
            out[file.name] = record
        else:
            out[file.name] = file.read_bytes()
    return out


def assert_same_checkpoint(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        if isinstance(want[name], dict) and name.endswith(".safetensors"):
            assert sorted(got[name]) == sorted(want[name])
            for key in want[name]:
                torch.testing.assert_close(got[name][key], want[name][key], rtol=0, atol=0)
        else:
            assert got[name] == want[name], name


def counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("fam,method,recovery", [
    ("gated_deltanet", "wanda", None),
    ("delta_net", "random", None),
    ("gated_deltanet", "wanda", RECOVERY),       # replayed batches + a teacher that is a copy
])
def test_several_ratios_equal_separate_runs(checkpoints, tmp_path, monkeypatch, fam, method,
                                            recovery):
    import lapr.models
    from lapr.pruning import recovery as rec_module
    from lapr.pruning import select

    src, calib = checkpoints[fam]
    settings = {"multiple": 2, "seed": 3}
    if recovery is not None:
        settings["recovery"] = {**recovery, "data": str(checkpoints["tokens"])}
        # a recovery that disturbs its teacher (the unpruned model, were it passed as is) after
        # use: the next ratio must still start from the untouched unpruned weights
        real_recover = rec_module.recover

        def recover(model, batches, settings, teacher=None, **kw):
            result = real_recover(model, batches, settings, teacher=teacher, **kw)
            with torch.no_grad():
                for p in teacher.parameters():
                    p.add_(1.0)
            return result

        monkeypatch.setattr(rec_module, "recover", recover)
    ratios = ["0.5", "0.25"]                     # not sorted: pairs stay in the given order
    singles = [tmp_path / "single" / r for r in ratios]
    for ratio, out in zip(ratios, singles):
        stage.run(args_for(src, out, method, ratio, calib=calib, settings=settings))

    loads = counting(monkeypatch, lapr.models, "load_model")
    calibs = counting(monkeypatch, select, "load_calib")
    batches = counting(monkeypatch, rec_module, "token_batches")
    batched = [tmp_path / "batched" / r for r in ratios]
    records = stage.prune(args_for(src, batched, method, ratios, calib=calib, settings=settings))
    assert (len(loads), len(calibs), len(batches)) == \
        (1, int(select.needs_calib(method)), int(recovery is not None))   # each once at most

    assert [r["ratio"] for r in records] == [0.5, 0.25]
    assert [r["d_k_after"] for r in records] == [6, 8]   # 12 * (1 - ratio), multiple of 2
    for record, got, want in zip(records, batched, singles):
        contents = checkpoint_contents(got)
        assert record == json.loads((got / "pruning.json").read_text())
        assert contents["pruning.json"]["recovery"]["steps_run"] == (2 if recovery else 0)
        assert_same_checkpoint(contents, checkpoint_contents(want))
    assert sorted(p.name for p in (tmp_path / "batched").iterdir()) == sorted(ratios)


@pytest.mark.parametrize("ratio,out,message", [
    (["0.25", "0.5"], ["a"], r"--ratio has 2 value\(s\) and --out has 1"),
    (["0.25"], ["a", "b"], r"--ratio has 1 value\(s\) and --out has 2"),
    (["0.25", "1.5"], ["a", "b"], "strictly between 0 and 1.*'1.5'"),
    (["0.25", "0.95"], ["a", "b"], "ratio 0.95 leaves no channel of d_k=12"),
    (["0.25", "0.5"], ["a", "x/../a"], "--out .*given twice"),
])
def test_bad_ratio_list_fails_before_loading_or_writing(checkpoints, tmp_path, monkeypatch,
                                                        ratio, out, message):
    import lapr.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before every ratio was checked")

    monkeypatch.setattr(lapr.models, "load_model", no_load)
    src, calib = checkpoints["delta_net"]
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ValueError, match=message):
        stage.run(args_for(src, [work / o for o in out], "wanda", ratio, calib=calib))
    assert not list(work.iterdir())
