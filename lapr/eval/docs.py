"""Shipped evaluation files -> lm-eval documents, fully offline.

Each `*_docs(**_)` below is an lm-eval `custom_dataset` hook (named in a task YAML
under `lapr/eval/tasks/`). It reads one file through `lapr.data.materialize` and
returns a `datasets.DatasetDict` whose split name and field layout are those of
the Hugging Face dataset the stock lm-eval task downloads, wherever the shipped
form allows; the exceptions (HellaSwag, WinoGrande) are documented in
`tasks/README.md`. lm-eval passes task metadata as keyword arguments, which the
hooks ignore.
"""
from __future__ import annotations

import json

import datasets

ARC_LABELS = "ABCDEFGH"


def _text(name: str) -> str:
    # Lazy import: `lapr.eval` stays importable on its own, and the checksum is verified at use.
    from lapr.data import materialize
    return materialize(name).read_bytes().decode("utf-8")


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in _text(name).split("\n") if line.strip()]


def _split(name: str, rows: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows)})


def wikitext_pages(raw: str) -> list[str]:
    """Articles of a WikiText raw file, exactly as EleutherAI/wikitext_document_level `page`.

    Mirrors that dataset script: split at lines that are top-level ` = Title = `
    headings (not ` = = Section = = `), join each article's lines with "\\n",
    and drop all-blank pieces (the blank first line of the file).
    """
    pages, lines = [], []
    for line in raw.split("\n"):
        heading = line.replace("= = =", "===").replace("= =", "==").strip()
        if heading.startswith("= ") and heading.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


def wikitext_docs(**_) -> datasets.DatasetDict:
    # The HF script opens the file in text mode; the shipped file has no "\r", so bytes == text.
    return _split("test", [{"page": p} for p in wikitext_pages(_text("wikitext2_test_raw"))])


def lambada_docs(**_) -> datasets.DatasetDict:
    """EleutherAI/lambada_openai `default`: one {"text"} per passage (5,153)."""
    return _split("test", [{"text": row["text"]} for row in _jsonl("lambada_openai_test")])


def piqa_docs(**_) -> datasets.DatasetDict:
    """baber/piqa validation: {goal, sol1, sol2, label} with the labels file zipped in."""
    rows = _jsonl("piqa_valid")
    labels = [int(x) for x in _text("piqa_valid_labels").split()]
    if len(rows) != len(labels):
        raise ValueError(f"piqa: {len(rows)} questions but {len(labels)} labels")
    return _split("validation", [
        {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": y}
        for r, y in zip(rows, labels)])


def hellaswag_items(text: str) -> list[dict]:
    """Parse the 6-lines-per-item text form: `label: ctx`, gold, 4 endings.

    Returns {activity_label, ctx, endings, label(str)} like the Rowan/hellaswag
    fields; `ctx` is already tag-stripped and ctx_a/ctx_b are joined (see
    tasks/hellaswag/utils.py for how the stock query is rebuilt).
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"hellaswag: {len(lines)} lines is not a multiple of 6")
    items = []
    for i in range(0, len(lines), 6):
        head, gold, *endings = lines[i:i + 6]
        activity_label, sep, ctx = head.partition(": ")
        if not sep or gold not in ("0", "1", "2", "3"):
            raise ValueError(f"hellaswag: malformed item at line {i + 1}: {head!r} / {gold!r}")
        items.append({"activity_label": activity_label, "ctx": ctx, "endings": endings,
                      "label": gold})
    return items


def hellaswag_docs(**_) -> datasets.DatasetDict:
    return _split("validation", hellaswag_items(_text("hellaswag_val")))


def winogrande_docs(**_) -> datasets.DatasetDict:
    """llm-foundry form {context_options, continuation, gold}: already the partial-scoring split."""
    rows = _jsonl("winogrande_dev")
    return _split("validation", [
        {"context_options": r["context_options"], "continuation": r["continuation"],
         "gold": int(r["gold"])} for r in rows])


def arc_rows(rows: list[dict]) -> list[dict]:
    """llm-foundry {query: "Question: ...", choices, gold} -> allenai/ai2_arc layout.

    Choice labels are set to A, B, C, ...; the original ids/labels are not shipped
    and the stock templates use only the label's position. llm-foundry padded the
    original 3-choice questions to 4 by repeating a wrong choice (7 in ARC-Easy
    test, 4 in ARC-Challenge test); the repeat is dropped again here (first
    occurrence kept, the gold one if it is repeated), so those questions get the
    3 requests stock lm-eval builds for them.
    """
    out = []
    for r in rows:
        query = r["query"]
        if not query.startswith("Question: "):
            raise ValueError(f"arc: query without 'Question: ' prefix: {query[:60]!r}")
        gold = int(r["gold"])
        choices = list(r["choices"])
        if not 0 <= gold < len(choices):
            raise ValueError(f"arc: gold {gold} outside {len(choices)} choices: {query[:60]!r}")
        keep: list[int] = []
        for i, c in enumerate(choices):
            if i == gold or (c != choices[gold] and all(c != choices[j] for j in keep)):
                keep.append(i)
        texts = [choices[i] for i in keep]
        out.append({"question": query[len("Question: "):],
                    "choices": {"text": texts, "label": list(ARC_LABELS[:len(texts)])},
                    "answerKey": ARC_LABELS[keep.index(gold)]})
    return out


def arc_easy_docs(**_) -> datasets.DatasetDict:
    return _split("test", arc_rows(_jsonl("arc_easy_test")))


def arc_challenge_docs(**_) -> datasets.DatasetDict:
    return _split("test", arc_rows(_jsonl("arc_challenge_test")))
