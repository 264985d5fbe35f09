"""Online corpora from the Hugging Face hub, streamed and tokenised to an int32 array.

For users with network access (e.g. `HuggingFaceFW/fineweb-edu`, `sample-10BT`).
The offline suite never calls this; with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set it
fails at once with a message saying so, instead of hanging on the network.
"""
from __future__ import annotations

import os

import numpy as np

_OFF = ("1", "true", "yes", "on")


def is_offline() -> bool:
    return any(os.environ.get(v, "0").lower() in _OFF for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def encode_hub_dataset(path: str, name: str | None, split: str, text_field: str, tokenizer,
                       max_tokens: int, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """First `max_tokens` tokens (int32) of a streamed hub dataset, EOS after each document.

    Example: encode_hub_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", "text", tok, 50_000_000)
    """
    if is_offline():
        raise RuntimeError(f"encode_hub_dataset({path!r}, {name!r}): offline (HF_HUB_OFFLINE or "
                           "HF_DATASETS_OFFLINE is set); use a shipped corpus such as "
                           "lapr.data.encode_corpus('gutenberg_train', tokenizer)")
    from datasets import load_dataset
    from tqdm.auto import tqdm

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no eos_token")
    try:
        stream = load_dataset(path, name, split=split, streaming=True)
    except Exception as err:  # network / auth / unknown id: say which dataset
        raise ConnectionError(f"could not stream {path!r} (config {name!r}, split {split!r}) "
                              f"from the hub: {err}") from err
    out = np.empty(max_tokens, dtype=np.int32)
    filled = 0
    bar = tqdm(total=max_tokens, unit="tok", unit_scale=True, desc=path, disable=not progress)
    batch: list[str] = []

    def flush() -> None:
        nonlocal filled
        for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
            ids = np.asarray(ids + [eos], dtype=np.int32)[: max_tokens - filled]
            out[filled:filled + len(ids)] = ids
            filled += len(ids)
            bar.update(len(ids))
            if filled >= max_tokens:
                break
        batch.clear()

    for row in stream:
        batch.append(row[text_field])
        if len(batch) == batch_size:
            flush()
            if filled >= max_tokens:
                break
    if batch and filled < max_tokens:
        flush()
    bar.close()
    return out[:filled]
