"""Tokenizers: the shipped GPT-2 one, a small Gutenberg BPE, or any local/hub one.

Why a small 8k-vocab BPE of our own: the suite trains small models on CPU and
then prunes their attention layers. With GPT-2's 50,257-token vocabulary the
embedding and output matrices would hold most of a small model's parameters
(50k x 256 = 12.9M per matrix), leaving little capacity in the attention layers
that are the object of study. A byte-level BPE with 8,192 tokens, trained on
the shipped Gutenberg train split, keeps embeddings at 2.1M parameters per
matrix at d=256 and still has no unknown tokens (byte-level). GPT-2's tokenizer
is shipped for larger GPU runs; pretrained hub models use their own tokenizer.

`gutenberg-bpe-8k`: byte-level BPE (GPT-2 pre-tokenizer regex, no prefix space),
vocab 8192, `<|endoftext|>` = id 0 (also used as bos/unk/pad; no special token
is added automatically, callers insert EOS where they want it), trained
deterministically on the first 20M characters of `gutenberg_train` (file
order: the first ~50 books). Rebuild with `python -m lapr.data.pack --tokenizer` (or `train_tokenizer`).
"""
from __future__ import annotations

import os
from pathlib import Path

from lapr.data.registry import FILES_DIR, TOKENIZERS, materialize, read_text

EOS = "<|endoftext|>"
SHIPPED = {"gpt2": 1024, "gutenberg-bpe-8k": 2048}  # name -> model_max_length
GUTENBERG_BPE_PATH = FILES_DIR / "tokenizers" / "gutenberg-bpe-8k" / "tokenizer.json"
TRAIN_CHARS = 20_000_000


def _fast_tokenizer_class():
    from transformers import PreTrainedTokenizerFast  # alias of TokenizersBackend in transformers 5
    return PreTrainedTokenizerFast


def load_tokenizer(name: str = "gutenberg-bpe-8k"):
    """A `transformers` fast tokenizer; pad_token is set to eos when missing.

    "gpt2" and "gutenberg-bpe-8k" come from the shipped files. Anything else goes
    to `AutoTokenizer.from_pretrained`: a local directory, or a hub id, which is
    fetched only when HF_HUB_OFFLINE is not set (otherwise only the local HF cache).
    """
    if name in SHIPPED:
        if name not in TOKENIZERS:
            raise FileNotFoundError(f"tokenizer {name!r} is not in the shipped manifest; "
                                    "run `python -m lapr.data.pack --tokenizer` to train it")
        tok = _fast_tokenizer_class()(
            tokenizer_file=str(materialize("tokenizer:" + name)),
            eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS,
            model_max_length=SHIPPED[name])
        tok.name_or_path = name
    else:
        from transformers import AutoTokenizer
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        local = Path(name).is_dir()
        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=offline and not local)
        except OSError as err:
            raise OSError(f"tokenizer {name!r}: not a shipped name ({', '.join(SHIPPED)}), "
                          f"not a local directory, and not loadable from the hub"
                          f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {err}") from err
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _pieces(text: str, size: int = 1_000_000):
    """~`size`-char pieces cut at line breaks, so no word is split."""
    start = 0
    while start < len(text):
        end = text.find("\n", min(start + size, len(text)) - 1)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def train_tokenizer(out_path: str | Path = GUTENBERG_BPE_PATH, vocab_size: int = 8192,
                    max_chars: int = TRAIN_CHARS, corpus: str = "gutenberg_train") -> Path:
    """Train the byte-level BPE on the first `max_chars` characters of `corpus`; save tokenizer.json.

    Deterministic: same text, same order, fixed settings; reruns give
    byte-identical files (tests/data/test_data_tokenizers.py).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = read_text(corpus)[:max_chars]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],  # EOS first -> id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_pieces(text), trainer=trainer, length=None)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    tok.save(str(tmp), pretty=True)
    os.replace(tmp, out_path)
    return out_path

