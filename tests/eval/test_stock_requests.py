"""Our offline tasks build the same lm-eval requests as the stock task definitions on the same documents.

Each stock task is built from the YAML (and utils) of the installed lm-eval package, with its
dataset replaced by documents we hand it (no hub access); our task is built from our YAML the same
way. Both then build their Instances and we compare what the model would be asked: request type,
arguments (context, continuation) and the gold answer. Where our shipped data is not in the stock
layout (HellaSwag text form, WinoGrande llm-foundry form) the stock task gets the original-layout
documents and ours the shipped form of the same items.
"""
from pathlib import Path

import datasets
import lm_eval.tasks
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml

from lapr.eval import TASKS_DIR, docs

STOCK = Path(lm_eval.tasks.__file__).resolve().parent
PAIRS = {  # our task -> (our YAML, stock YAML)
    "lapr_wikitext": ("wikitext/lapr_wikitext.yaml", "wikitext/wikitext.yaml"),
    "lapr_lambada_openai": ("lambada/lapr_lambada_openai.yaml", "lambada/lambada_openai.yaml"),
    "lapr_piqa": ("piqa/lapr_piqa.yaml", "piqa/piqa.yaml"),
    "lapr_hellaswag": ("hellaswag/lapr_hellaswag.yaml", "hellaswag/hellaswag.yaml"),
    "lapr_winogrande": ("winogrande/lapr_winogrande.yaml", "winogrande/default.yaml"),
    "lapr_arc_easy": ("arc/lapr_arc_easy.yaml", "arc/arc_easy.yaml"),
    "lapr_arc_challenge": ("arc/lapr_arc_challenge.yaml", "arc/arc_challenge.yaml"),
}
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
# Keys allowed to differ between a stock config and ours: where the data comes from and labels.
SOURCE_KEYS = {"task", "tag", "dataset_path", "dataset_name", "custom_dataset", "metadata", *SPLIT_KEYS}


def config(path: Path) -> dict:
    cfg = load_yaml(path, resolve_func=True)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    return cfg


def build(path: Path, rows: list[dict]) -> ConfigurableTask:
    """The task of `path` on `rows` (every split the config names holds them), requests built."""
    cfg = config(path)
    splits = {cfg[k] for k in SPLIT_KEYS if cfg.get(k)}
    cfg["custom_dataset"] = lambda **_: datasets.DatasetDict(
        {s: datasets.Dataset.from_list(rows) for s in splits})
    task = ConfigurableTask(config=cfg)
    task.build_all_requests(limit=None)
    return task


def requests(task: ConfigurableTask) -> list[tuple]:
    return [(i.request_type, i.doc_id, i.idx, i.arguments) for i in task.instances]


def golds(task: ConfigurableTask) -> list:
    """The answer each document is scored against (WinoGrande: the index of the right context)."""
    out = []
    for doc in task.eval_docs:
        out.append(task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc))
    return out


def compare(name: str, ours_rows: list[dict], stock_rows: list[dict]):
    ours = build(TASKS_DIR / PAIRS[name][0], ours_rows)
    stock = build(STOCK / PAIRS[name][1], stock_rows)
    assert ours.OUTPUT_TYPE == stock.OUTPUT_TYPE
    assert len(ours.instances) == len(stock.instances) > 0
    assert requests(ours) == requests(stock)
    assert golds(ours) == golds(stock)
    return ours, stock


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_configs_differ_only_in_data_source(name):
    ours, stock = (config(TASKS_DIR / PAIRS[name][0]), config(STOCK / PAIRS[name][1]))
    # function-valued entries are compared by behaviour in the request tests below
    functions = {k for k, v in {**ours, **stock}.items() if callable(v)}
    expected_extra = {"lapr_winogrande": {"doc_to_decontamination_query"}}.get(name, set())
    keys = (set(ours) | set(stock)) - SOURCE_KEYS - functions
    differ = {k for k in keys if ours.get(k) != stock.get(k)}
    assert differ == expected_extra, {k: (ours.get(k), stock.get(k)) for k in differ}
    assert {"output_type", "doc_to_text", "doc_to_target", "metric_list"} <= set(ours) & set(stock)
    assert ours["metadata"]["version"] == stock["metadata"]["version"]
    assert ours["metadata"]["stock_task"] == stock["task"]
    # the stock functions we copied are still the stock ones
    if name == "lapr_wikitext":
        assert ours["doc_to_target"].__code__.co_code == stock["doc_to_target"].__code__.co_code
        assert ours["process_results"].__code__.co_code == stock["process_results"].__code__.co_code


def test_wikitext_requests_and_results():
    pages = docs.wikitext_docs()["test"]["page"]
    rows = [{"page": pages[i]} for i in (0, 28, 29)]    # 1093, 28 and 249 words
    ours, stock = compare("lapr_wikitext", rows, rows)
    for doc in rows:                                     # word/byte counts of process_results
        assert ours.process_results(doc, [-123.0]) == stock.process_results(doc, [-123.0])


def test_lambada_requests():
    rows = docs.lambada_docs()["test"].select(range(8)).to_list()
    compare("lapr_lambada_openai", rows, rows)


def test_piqa_requests():
    rows = docs.piqa_docs()["validation"].select(range(8)).to_list()
    compare("lapr_piqa", rows, rows)


@pytest.mark.parametrize("name,source", [("lapr_arc_easy", "arc_easy_test"),
                                         ("lapr_arc_challenge", "arc_challenge_test")])
def test_arc_requests(name, source):
    rows = docs.arc_rows(docs._jsonl(source))
    three = [i for i, r in enumerate(rows) if len(r["choices"]["text"]) == 3]
    assert len(three) == {"arc_easy_test": 7, "arc_challenge_test": 4}[source]
    sample = [rows[i] for i in list(range(6)) + three[:2]]
    ours, _ = compare(name, sample, sample)
    assert [len(ours.doc_to_choice(d)) for d in ours.eval_docs][-2:] == [3, 3]


def test_arc_padding_is_undone():
    raw = [{"query": "Question: q", "choices": ["x", "x", "y", "z"], "gold": 2},
           {"query": "Question: q", "choices": ["y", "x", "y", "z"], "gold": 2},
           {"query": "Question: q", "choices": ["a", "b", "c", "d"], "gold": 3}]
    got = [(r["choices"]["text"], r["answerKey"]) for r in docs.arc_rows(raw)]
    assert got == [(["x", "y", "z"], "B"), (["x", "y", "z"], "B"), (["a", "b", "c", "d"], "D")]


# ----------------------------------------------------------------------------- HellaSwag

# The first validation items of rowanz/hellaswag hellaswag_val.jsonl (= Rowan/hellaswag validation).
HELLASWAG_RAW = [
    {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": "3"},
    {"activity_label": "Clean and jerk", "ctx_a": "A lady walks to a barbell. She bends down and grabs the pole.",
     "ctx_b": "the lady", "endings": ["swings and lands in her arms.", "pulls the barbell forward.",
                                      "pulls a rope attached to the barbell.",
                                      "stands and lifts the weight over her head."], "label": "3"},
    {"activity_label": "Canoeing", "ctx_a": "Two women in a child are shown in a canoe while a man pulls the "
     "canoe while standing in the water, with other individuals visible in the background.",
     "ctx_b": "the child and a different man",
     "endings": ["are then shown paddling down a river in a boat while a woman talks.",
                 "are driving the canoe, they go down the river flowing side to side.",
                 "sit in a canoe while the man paddles.",
                 "walking go down the rapids, while the man in his helicopter almost falls and goes out of "
                 "canoehood."], "label": "2"},
    {"activity_label": "High jump", "ctx_a": "A boy is running down a track.", "ctx_b": "the boy",
     "endings": ["runs into a car.", "gets in a mat.", "lifts his body above the height of a pole.",
                 "stands on his hands and springs."], "label": "2"},
]
# WikiHow-style items (tags as in the WikiHow part of HellaSwag; ctx_b is always empty there).
WIKIHOW_RAW = [
    {"activity_label": "Home and Garden", "ctx_a": "[header] How to clean a window [title] Mix a cleaning "
     "solution. [step] Combine vinegar and water in a bucket.", "ctx_b": "",
     "endings": ["Dip a sponge in it. [substeps] Wring the sponge out well.", "Paint the window blue.",
                 "Avoid [www.example.com] sites. [title] Rinse.", "Eat the sponge before you start."],
     "label": "0"},
    {"activity_label": "Personal Care and Style", "ctx_a": "[header] How to braid hair [title] Brush your hair "
     "[www.hair.org]. [step] Remove all knots first.", "ctx_b": "",
     "endings": ["Split the hair into three parts.", "Cut it all off.", "Wash the brush in milk.",
                 "Sell the comb on a website."], "label": "0"},
]
WIKIHOW_TAGGED_ENDING = {"activity_label": "Health", "ctx_a": "[header] How to rest [title] Lie down.",
                         "ctx_b": "", "endings": ["[step] Close your eyes.", "Run.", "Jump.", "Shout."],
                         "label": "0"}


def text_form(raw: dict) -> dict:
    """The shipped text form of a raw item: klosax/hellaswag_text_data extract_hellaswag.cpp, ported."""
    def pre(s):
        for old, new in (("[header]", ""), ("[step]", ""), ("[substeps]", ""), (" [title]", ". "),
                         ("[title] ", ""), ("[title].", ""), ("  ", " ")):
            s = s.replace(old, new)
        return s[1:] if s.startswith(" ") else s

    ctx = raw["ctx_a"] + " " + raw["ctx_b"] if raw["ctx_b"] else raw["ctx_a"]
    line = pre(raw["activity_label"]) + ": " + pre(ctx)
    return docs.hellaswag_items("\n".join([line, raw["label"], *map(pre, raw["endings"])]) + "\n")[0]


def test_hellaswag_text_form_port_matches_shipped_file():
    shipped = docs.hellaswag_items(docs._text("hellaswag_val"))[:len(HELLASWAG_RAW)]
    assert [text_form(r) for r in HELLASWAG_RAW] == shipped


def test_hellaswag_requests_activitynet_and_wikihow():
    shipped = docs.hellaswag_items(docs._text("hellaswag_val"))[:len(HELLASWAG_RAW)]
    ours, _ = compare("lapr_hellaswag", shipped + [text_form(r) for r in WIKIHOW_RAW],
                      HELLASWAG_RAW + WIKIHOW_RAW)
    assert ours.eval_docs[0]["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert ours.eval_docs[-1]["query"] == ("Personal Care and Style: How to braid hair. Brush your hair . "
                                           "Remove all knots first.")


def test_hellaswag_documented_difference_tagged_ending():
    """tasks/README.md: an ending that began with a tag keeps a leading space in stock lm-eval only."""
    ours = build(TASKS_DIR / PAIRS["lapr_hellaswag"][0], [text_form(WIKIHOW_TAGGED_ENDING)])
    stock = build(STOCK / PAIRS["lapr_hellaswag"][1], [WIKIHOW_TAGGED_ENDING])
    a, b = requests(ours), requests(stock)
    assert a[1:] == b[1:]
    assert a[0][3] == ("Health: How to rest. Lie down.", " Close your eyes.")
    assert b[0][3] == ("Health: How to rest. Lie down.", "  Close your eyes.")


# ----------------------------------------------------------------------------- WinoGrande

def winogrande_original(row: dict) -> dict:
    """allenai/winogrande layout {sentence, option1, option2, answer} of an llm-foundry row."""
    a, b = row["context_options"]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return {"sentence": a[:n] + "_ " + row["continuation"], "option1": a[n:], "option2": b[n:],
            "answer": str(int(row["gold"]) + 1)}


def test_winogrande_partial_evaluation_requests():
    rows = docs.winogrande_docs()["validation"].select(range(10)).to_list()
    original = [winogrande_original(r) for r in rows]
    # the first dev item as published (allenai/winogrande winogrande_xl validation)
    assert original[0]["answer"] == "2" and rows[0]["context_options"][1].endswith("so Maria")
    first = {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
             "option1": "Sarah", "option2": "Maria", "answer": "2"}
    ours, stock = compare("lapr_winogrande", rows[:1] + rows, [first] + original)
    assert ours.multiple_input == stock.multiple_input == 2
    assert requests(ours)[:2] == [
        ("loglikelihood", 0, 0, ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases.")),
        ("loglikelihood", 0, 1, ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."))]
