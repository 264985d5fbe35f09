"""Bad command lines cost no result (issue 20, items 4, 5, 6, 8 and 9).

Every case is a command line that must fail with exactly one non-empty stderr line,
`lapr <stage>: error: <message>` naming the offending key, file or value, exit 2 for a malformed
command line and 1 for everything else, and leave every path under the fixture root (inputs and
would-be outputs alike) as it was. CASES run `lapr.cli.main` in this process (a `python -m lapr`
costs 3-10 s of imports on the 2-core machine); SUBPROCESS runs a few through the real
`python -m lapr`, where stray warnings or tracebacks would show.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lapr.cli import main

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(family="delta_net", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=8, head_v_dim=16,
            mlp_ratio=2)                            # 2 layers x 2 heads = 4 heads
NAN_PARAM = "model.layers.0.attn.q_proj.weight"


def _save(model, tok, path: Path) -> Path:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Tiny checkpoints (the model, another of the same shape, one with another d_k, corrupt copies),
    calibration files and heads tables of each, token streams and a results folder. Returns the
    root and the values the expected messages name."""
    from lapr.data import load_tokenizer
    from lapr.heads.table import head_table
    from lapr.models import build_model
    from lapr.models.weights import fingerprint
    from lapr.profiling.calibrate import calibrate
    from lapr.provenance import write_json

    tok = load_tokenizer("gutenberg-bpe-8k")
    r = tmp_path_factory.mktemp("bad")
    spec = {**SPEC, "vocab_size": len(tok)}
    models = {"model": build_model(spec, seed=0).eval(), "other": build_model(spec, seed=1).eval(),
              "wide": build_model({**spec, "head_k_dim": 16}, seed=0).eval()}
    for name, m in models.items():
        _save(m, tok, r / name)
    fp = {name: fingerprint(r / name) for name in models}
    ids = torch.randint(0, len(tok), (1, 2, 16), generator=torch.Generator().manual_seed(0))

    calib = calibrate(models["other"], ids, rows=16, model_name=str(r / "other"),
                      meta={"weights_fingerprint": fp["other"]})
    torch.save(calib, r / "other.calib.pt")
    calib["meta"].pop("weights_fingerprint")   # as written before fingerprints were recorded
    torch.save(calib, r / "legacy.calib.pt")
    torch.save(calibrate(models["wide"], ids, rows=16), r / "wide.calib.pt")   # no model recorded
    (r / "text.calib.pt").write_text("layer,head\n0,0\n")

    for name in ("model", "other", "wide"):
        (r / f"prof_{name}").mkdir()
        head_table(models[name], ids[0]).to_csv(r / f"prof_{name}" / "heads.csv", index=False)
    for name in ("model", "other"):   # the profile stage's provenance beside heads.csv
        write_json(r / f"prof_{name}" / "provenance.json", {"stage": "profile", "model": str(r / name),
                                                            "weights_fingerprint": fp[name],
                                                            "settings": {"T": 16}})

    with torch.no_grad():
        dict(models["model"].named_parameters())[NAN_PARAM][0, 0] = math.nan
    _save(models["model"], tok, r / "nan")
    weights = (r / "model" / "model.safetensors").read_bytes()
    for name, data in (("empty", b""), ("trunc", weights[: len(weights) // 2])):
        shutil.copytree(r / "model", r / name)
        (r / name / "model.safetensors").write_bytes(data)
    (r / "link").symlink_to(r / "model")
    shutil.copytree(r / "model", r / "mqar")   # an mqar-train output: the checkpoint + its task
    (r / "mqar" / "metrics.json").write_text(json.dumps({"task": {"vocab_size": 64, "seq_len": 64,
                                                                   "num_kv_pairs": 8, "num_queries": None}}))

    np.save(r / "train.npy", np.arange(2000, dtype=np.int32) % len(tok))
    np.save(r / "valid.npy", np.arange(100, dtype=np.int32))
    (r / "results" / "eval").mkdir(parents=True)
    values = {"root": str(r), "fp_model": fp["model"][:12], "fp_other": fp["other"][:12],
              "size": len(weights), "half": len(weights) // 2,
              "numel": dict(models["model"].named_parameters())[NAN_PARAM].numel()}
    return r, values


def snapshot(r: Path) -> dict:
    return {str(p.relative_to(r)): (p.is_dir(), p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
            for p in sorted(r.rglob("*"))}


R = "{root}"
EVAL = json.dumps({"tasks": [], "perplexity": {"datasets": ["gutenberg_valid"], "max_tokens": 128, "seq_len": 32},
                   "unigram": False, "device": "cpu"})
HEADS = json.dumps({"eval": {"ppl": [], "seq_len": 8}, "niah": None, "device": "cpu"})
PRUNE = ["prune", "--model", f"{R}/model", "--ratio", "0.5", "--out", f"{R}/pruned/0.5"]
STAY = "writing it would change that input; choose another output path"
FOREIGN = ("{what} was recorded for model {root}/other (weights {fp_other}), not for --model {root}/model "
           "(weights {fp_model}): use the file made from this model")

# (id, command line, exit code, the exact message after `lapr <stage>: error: `), {root} and the
# fixture's values filled in
CASES = [
    # 4. an output that is, contains or lies inside an input
    ("out-is-model", ["prune", "--model", f"{R}/model", "--method", "l1", "--ratio", "0.5", "--out", f"{R}/model"],
     2, f"--out {R}/model is the input --model {R}/model: {STAY}"),
    ("out-contains-model", [*PRUNE[:5], "--method", "l1", "--out", R], 2,
     f"--out {R} contains the input --model {R}/model: {STAY}"),
    ("out-inside-model", [*PRUNE[:5], "--method", "l1", "--out", f"{R}/model/pruned"], 2,
     f"--out {R}/model/pruned lies inside the input --model {R}/model: {STAY}"),
    ("out-symlink-to-model", [*PRUNE[:5], "--method", "l1", "--out", f"{R}/link"], 2,
     f"--out {R}/link (resolves to {R}/model) is the input --model {R}/model: {STAY}"),
    ("out-is-calib", [*PRUNE[:5], "--method", "wanda", "--calib", f"{R}/other.calib.pt", "--out",
                      f"{R}/other.calib.pt"], 2,
     f"--out {R}/other.calib.pt is the input --calib {R}/other.calib.pt: {STAY}"),
    ("heads-out-is-heads-csv", ["heads", "--model", f"{R}/model", "--heads-csv", f"{R}/prof_model/heads.csv",
                                "--method", "joint_rank_norm", "--budget", "0.5", "--out", f"{R}/prof_model/heads.csv"],
     2, f"--out {R}/prof_model/heads.csv is the input --heads-csv {R}/prof_model/heads.csv: {STAY}"),
    ("evaluate-out-inside-model", ["evaluate", "--model", f"{R}/model", "--out", f"{R}/model/eval.csv",
                                   "--settings", EVAL], 2,
     f"--out {R}/model/eval.csv lies inside the input --model {R}/model: {STAY}"),
    ("profile-out-is-model", ["profile", "--model", f"{R}/model", "--out", f"{R}/model/", "--device", "cpu"], 2,
     f"--out {R}/model/ is the input --model {R}/model: {STAY}"),
    ("bench-out-inside-model", ["bench", "--settings", '{"mode": "model", "device": "cpu"}', "--model",
                                f"{R}/model", "--out", f"{R}/model/bench_cpu.csv"], 2,
     f"--out {R}/model/bench_cpu.csv lies inside the input --model {R}/model: {STAY}"),
    ("mqar-eval-out-inside-model", ["mqar-eval", "--model", f"{R}/model", "--out", f"{R}/model/mqar.csv"], 2,
     f"--out {R}/model/mqar.csv lies inside the input --model {R}/model: {STAY}"),
    ("figures-out-inside-results", ["figures", "--results", f"{R}/results", "--out", f"{R}/results/figures"], 2,
     f"--out {R}/results/figures lies inside the input --results {R}/results: {STAY}"),
    ("pretrain-out-contains-train", ["pretrain", "--spec", json.dumps(SPEC), "--train", f"{R}/train.npy",
                                     "--eval", f"valid={R}/valid.npy", "--out", R], 2,
     f"--out {R} contains the input --train {R}/train.npy: {STAY}"),
    ("tokens-out-inside-tokenizer", ["tokens", "--dataset", "gutenberg_valid", "--tokenizer", f"{R}/model",
                                     "--out", f"{R}/model/tokens.npy"], 2,
     f"--out {R}/model/tokens.npy lies inside the input --tokenizer {R}/model: {STAY}"),
    # 5. inputs recorded for another model
    ("calib-of-other-model", [*PRUNE, "--method", "wanda", "--calib", f"{R}/other.calib.pt"], 2,
     FOREIGN.replace("{what}", f"--calib {R}/other.calib.pt")),
    ("calib-of-other-model-no-fingerprint", [*PRUNE, "--method", "wanda", "--calib", f"{R}/legacy.calib.pt"], 2,
     FOREIGN.replace("{what}", f"--calib {R}/legacy.calib.pt")),
    ("calib-of-other-d_k", [*PRUNE, "--method", "wanda", "--calib", f"{R}/wide.calib.pt"], 2,
     f"--calib {R}/wide.calib.pt: layer 0 q_grad has shape (2, 16, 32), model needs (2, 8, 32) "
     f"(a calib.pt of another model?)"),
    ("heads-csv-of-other-model", ["heads", "--model", f"{R}/model", "--heads-csv", f"{R}/prof_other/heads.csv",
                                  "--method", "joint_rank_norm", "--budget", "0.5", "--out", f"{R}/h/0.5.csv"], 2,
     FOREIGN.replace("{what}", f"--heads-csv {R}/prof_other/heads.csv")),
    ("heads-csv-of-other-d_k", ["heads", "--model", f"{R}/model", "--heads-csv", f"{R}/prof_wide/heads.csv",
                                "--method", "joint_rank_norm", "--budget", "0.5", "--out", f"{R}/h/0.5.csv",
                                "--settings", HEADS], 2,
     f"--heads-csv {R}/prof_wide/heads.csv: layer 0 has rank bound 16, but this model's states (d_k 8, d_v 16) "
     f"bound it at 8: a heads.csv of a model with another d_k?"),
    # 6. corrupt weights
    ("empty-safetensors", ["evaluate", "--model", f"{R}/empty", "--out", f"{R}/e.csv", "--settings", EVAL], 2,
     f"{R}/empty/model.safetensors: empty file (0 bytes), not a safetensors file"),
    ("truncated-safetensors", [*PRUNE[:1], "--model", f"{R}/trunc", *PRUNE[3:], "--method", "l1"], 2,
     f"{R}/trunc/model.safetensors: truncated or corrupt safetensors file (its header declares {{size}} bytes, "
     f"the file has {{half}})"),
    ("nan-weights-heads", ["heads", "--model", f"{R}/nan", "--method", "random", "--budget", "0.5",
                           "--out", f"{R}/h/0.5.csv", "--settings", HEADS], 2,
     f"{R}/nan/model.safetensors: tensor {NAN_PARAM} holds 1 non-finite value(s) (NaN / inf) of {{numel}}: "
     f"corrupt weights"),
    ("nan-weights-profile", ["profile", "--model", f"{R}/nan", "--out", f"{R}/p", "--device", "cpu"], 2,
     f"{R}/nan/model.safetensors: tensor {NAN_PARAM} holds 1 non-finite value(s) (NaN / inf) of {{numel}}: "
     f"corrupt weights"),
    # 8. smaller
    ("prune-settings-not-json", [*PRUNE, "--method", "l1", "--settings", "{multiple: 4}"], 2,
     "--settings is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("bench-settings-not-json", ["bench", "--settings", "ops", "--out", f"{R}/b_cpu.csv"], 2,
     "--settings is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    ("prune-settings-not-object", [*PRUNE, "--method", "l1", "--settings", "[4]"], 2,
     "--settings must be a JSON object, got list"),
    ("profile-device-unknown", ["profile", "--model", f"{R}/model", "--out", f"{R}/p", "--device", "cdua"], 2,
     "device 'cdua' is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')"),
    ("prune-device-unknown", [*PRUNE, "--method", "l1", "--settings",
                              '{"device": "gpu", "recovery": {"enabled": true, "steps": 1}}'], 2,
     "device 'gpu' is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')"),
    ("calib-not-torch", [*PRUNE, "--method", "wanda", "--calib", f"{R}/text.calib.pt"], 2,
     f"{R}/text.calib.pt: not a torch file written by lapr profile (torch.load raised UnpicklingError)"),
    ("eval_seq_len-too-long", ["pretrain", "--spec", json.dumps(SPEC), "--settings",
                               '{"seq_len": 16, "eval_seq_len": 4096}', "--train", f"{R}/train.npy",
                               "--eval", f"valid={R}/valid.npy", "--out", f"{R}/pretrained"], 2,
     "settings.eval_seq_len=4096 needs 4096 tokens, but --eval valid has 100"),
    ("head-budget-removes-every-head", ["heads", "--model", f"{R}/model", "--heads-csv", f"{R}/prof_model/heads.csv",
                                        "--method", "joint_rank_norm", "--budget", "0.5", "0.9", "--out",
                                        f"{R}/h/0.5.csv", f"{R}/h/0.9.csv", "--settings", HEADS], 2,
     "head budget 0.9 removes all 4 heads of the model (round(0.9 * 4) = 4): lower the budget"),
    ("mqar-head-budget-removes-every-head", ["mqar-eval", "--model", f"{R}/mqar", "--out", f"{R}/mq.csv",
                                             "--settings", '{"heads": {"budgets": [0.9]}, "device": "cpu"}'], 2,
     "head budget 0.9 removes all 4 heads of the model (round(0.9 * 4) = 4): lower the budget"),
    # 9. usage errors and plain failures: one line each
    ("missing-arguments", ["prune", "--model", f"{R}/model"], 2,
     "the following arguments are required: --method, --ratio, --out (see lapr prune --help)"),
    ("unknown-setting", [*PRUNE, "--method", "l1", "--settings", '{"multipel": 4}'], 2,
     "prune.multipel: unknown key; allowed: device, multiple, recovery, seed"),
    # the same settings model as the workflow's config and library callers: the key by its config path
    ("profile-settings-typo", ["profile", "--model", f"{R}/model", "--out", f"{R}/p", "--device", "cpu",
                               "--settings", '{"n_postions": 64}'], 2,
     "profiling.n_postions: unknown key; allowed: T, batch, calib, capture, class_fraction, class_rule, contexts, "
     "eps, eps_sensitivity, n_positions, seed, spectrum_positions, svd, tokenizer, warmup"),
    ("evaluate-settings-bad-value", ["evaluate", "--model", f"{R}/model", "--out", f"{R}/e.csv", "--settings",
                                     '{"perplexity": {"seq_len": 1}}'], 2,
     "evaluate.perplexity.seq_len: expected an integer >= 2, got 1"),
    ("mqar-train-settings-typo", ["mqar-train", "--out", f"{R}/mq", "--settings", '{"train": {"stepz": 5}}'], 2,
     "mqar.train.train.stepz: unknown key; allowed: attempts, batch_size, eval_every, eval_n, grad_clip, lr, "
     "restart_at, restart_below, steps, target_recall, threads, time_limit_s, warmup, weight_decay"),
    ("missing-model", ["evaluate", "--model", f"{R}/missing", "--out", f"{R}/e.csv", "--settings", EVAL], 2,
     f"--model {R}/missing: directory not found"),
]


def expected(stage: str, msg: str, values: dict) -> str:
    return f"lapr {stage}: error: " + msg.replace("{root}", values["root"]).format(**values)


def check(r: Path, before: dict, values: dict, stage: str, code: int, msg: str, rc: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0] == expected(stage, msg, values)
    assert rc == code
    assert snapshot(r) == before  # no output created, no input changed


@pytest.mark.parametrize("argv, code, msg", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_line(root, argv, code, msg, capfd):
    r, values = root
    before = snapshot(r)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([a.replace(R, str(r)) for a in argv])
    check(r, before, values, argv[0], code, msg, exit_.value.code, capfd.readouterr().err)


# cheap imports (figures ~1 s, bench ~3 s), and one that loads fla and a checkpoint (~10 s)
SUBPROCESS = ["figures-out-inside-results", "bench-settings-not-json", "empty-safetensors"]


@pytest.fixture(scope="module")
def processes(root):
    """The SUBPROCESS cases and a --debug run through `python -m lapr`, all started at once."""
    r, _ = root
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("LAPR_DEBUG", None)
    cases = {c[0]: c[1] for c in CASES}
    runs = {name: cases[name] for name in SUBPROCESS}
    runs["debug"] = ["--debug", *cases["figures-out-inside-results"]]
    before = snapshot(r)
    procs = {name: subprocess.Popen([sys.executable, "-m", "lapr", *(a.replace(R, str(r)) for a in argv)],
                                    cwd=r, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, argv in runs.items()}
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        results[name] = (p.returncode, out, err)
    return results, before


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_command_line_subprocess(root, processes, name):
    r, values = root
    results, before = processes
    rc, _, err = results[name]
    _, argv, code, msg = next(c for c in CASES if c[0] == name)
    check(r, before, values, argv[0], code, msg, rc, err)


def test_debug_flag_shows_the_traceback(root, processes):
    r, values = root
    results, before = processes
    rc, _, err = results["debug"]
    assert rc == 2 and err.startswith("Traceback (most recent call last):"), err
    assert err.splitlines()[-1].startswith(f"ValueError: --out {r}/results/figures lies inside the input --results")
    assert snapshot(r) == before


@pytest.mark.parametrize("how", ["LAPR_DEBUG=1", "--debug after the stage"])
def test_debug_environment_variable_or_stage_flag(root, capfd, monkeypatch, how):
    argv = ["bench", "--settings", "[]", "--out", f"{root[0]}/b_cpu.csv"]
    if how == "LAPR_DEBUG=1":
        monkeypatch.setenv("LAPR_DEBUG", "1")
    else:
        argv.append("--debug")
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == "lapr.settings.UsageError: --settings must be a JSON object, got list"


@pytest.mark.parametrize("name", ["unknown-setting", "profile-settings-typo", "evaluate-settings-bad-value",
                                  "mqar-train-settings-typo"])
def test_library_callers_get_the_command_lines_message(name):
    """A stage's library entry point refuses the same settings with the same line as its CLI."""
    from lapr.eval.stage import resolve_settings
    from lapr.probes.mqar_stage import resolve_train_settings
    from lapr.profiling.stage import parse_settings as profile_settings
    from lapr.pruning.stage import parse_settings as prune_settings

    argv, msg = next((c[1], c[3]) for c in CASES if c[0] == name)
    parse = {"prune": prune_settings, "profile": lambda s: profile_settings(s, torch.device("cpu")),
             "evaluate": resolve_settings, "mqar-train": resolve_train_settings}[argv[0]]
    with pytest.raises(ValueError) as err:
        parse(argv[argv.index("--settings") + 1])
    assert str(err.value) == msg


def test_unknown_stage(capfd):
    with pytest.raises(SystemExit) as exit_:
        main(["prnue", "--model", "m"])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("lapr: error: argument stage: invalid choice: 'prnue' (choose from 'tokens', ")


@pytest.mark.parametrize("error", [RuntimeError("internal\nfailure"), TypeError("internal failure"),
                                   ValueError(""), AssertionError()], ids=lambda e: type(e).__name__)
def test_unexpected_error_keeps_its_traceback(root, capfd, monkeypatch, error):
    """Not a refused input but a bug (any other type, or a refusal without a message): the traceback
    comes first, so that a long job's log says where without a rerun, then the one line with the
    exception's type."""
    from lapr.bench import stage

    def boom(*_):
        raise error

    monkeypatch.setattr(stage, "resolve_device", boom)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--out", f"{root[0]}/b_cpu.csv"])
    assert exit_.value.code == 1
    err = capfd.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in boom" in err, err
    text = {RuntimeError: ": internal failure", TypeError: ": internal failure"}.get(type(error), "")
    assert err.splitlines()[-1] == (f"lapr bench: error: {type(error).__name__}{text} "
                                    f"(an unexpected error: the traceback is above)")


def test_unexpected_error_with_debug_is_the_plain_traceback(root, capfd, monkeypatch):
    from lapr.bench import stage

    def boom(*_):
        raise RuntimeError("internal failure")

    monkeypatch.setattr(stage, "resolve_device", boom)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["--debug", "bench", "--out", f"{root[0]}/b_cpu.csv"])
    err = capfd.readouterr().err
    assert exit_.value.code == 1 and err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == "RuntimeError: internal failure" and "lapr bench: error:" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [
    ["profile", "--model", f"{R}/model", "--out", f"{R}/p", "--device", "cuda"],
    ["evaluate", "--model", f"{R}/model", "--out", f"{R}/e.csv", "--settings", EVAL.replace('"cpu"', '"cuda"')],
    ["mqar-eval", "--model", f"{R}/mqar", "--out", f"{R}/mq.csv", "--settings", '{"device": "cuda"}'],
], ids=lambda a: a[0])
def test_cuda_without_a_cuda_device_is_one_line(root, capfd, argv):
    """torch's own error (an AssertionError at the first tensor moved) would read as a bug."""
    r, values = root
    before = snapshot(r)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([a.replace(R, str(r)) for a in argv])
    check(r, before, values, argv[0], 2, "device 'cuda' asked for, but torch sees no CUDA device on this machine",
          exit_.value.code, capfd.readouterr().err)


def test_evaluate_never_writes_a_missing_metric(root, capfd, monkeypatch):
    """A NaN perplexity (here faked: NaN weights are refused at load) fails the row, not an empty cell."""
    from lapr.eval import perplexity

    r, _ = root
    monkeypatch.setattr(perplexity, "token_perplexity", lambda *a, **k: {
        "nll": math.nan, "ppl": math.nan, "nll_stderr": math.nan, "ppl_stderr": math.nan, "tokens": 93,
        "windows": 3, "window_nll": [math.nan] * 3, "window_tokens": [31] * 3})
    before = snapshot(r)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--model", f"{r}/model", "--out", f"{r}/e.csv", "--settings", EVAL])
    assert exit_.value.code == 2  # refused: the model's weights give no finite metric
    assert capfd.readouterr().err.splitlines()[-1] == (
        f"lapr evaluate: error: {r}/model: ppl/gutenberg_valid ppl is nan (2 of 2 metrics not finite): "
        f"no result row is written with a missing metric")
    assert snapshot(r) == before


def test_inputs_of_the_model_itself_or_a_copy_are_accepted(root, tmp_path):
    """The controls of the foreign-input cases: this model's calib.pt, with a fingerprint or (as
    written before fingerprints) with its path only, prunes the model and a copy of it."""
    from lapr.models import load_model
    from lapr.models.weights import fingerprint
    from lapr.profiling.calibrate import calibrate

    r, _ = root
    copy = shutil.copytree(r / "model", tmp_path / "copy")
    ids = torch.randint(0, 100, (1, 2, 16), generator=torch.Generator().manual_seed(0))
    calib = calibrate(load_model(r / "model", "cpu"), ids, rows=16, model_name=str(r / "model"),
                      meta={"weights_fingerprint": fingerprint(r / "model")})
    torch.save(calib, tmp_path / "own.calib.pt")
    calib["meta"].pop("weights_fingerprint")
    torch.save(calib, tmp_path / "legacy.calib.pt")
    for model in (r / "model", copy):
        for name in ("own", "legacy"):
            out = tmp_path / f"{model.name}-{name}"
            main(["prune", "--model", str(model), "--method", "wanda", "--calib", str(tmp_path / f"{name}.calib.pt"),
                  "--ratio", "0.5", "--out", str(out)])
            assert (out / "model.safetensors").is_file()
