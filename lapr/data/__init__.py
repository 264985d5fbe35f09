"""lapr.data: shipped datasets and tokenizers, token streams, calibration batches.

    from lapr.data import DATASETS, materialize, read_text, load_tokenizer
    path = materialize("wikitext2_test_raw")      # plain, sha256-verified file
    tok = load_tokenizer("gutenberg-bpe-8k")      # or "gpt2", a local dir, a hub id
    ids = encode_corpus("gutenberg_valid", tok)   # int32, EOS after each book
    calib = random_windows(ids, n=128, seq_len=512, seed=0)

Files live in `lapr/data/files/` (provenance and licences in files/SOURCES.md).
"""
from lapr.data.hub import encode_hub_dataset
from lapr.data.registry import (DATASETS, TOKENIZERS, cache_dir, known_names, materialize,
                                read_bytes, read_text, verify_all)
from lapr.data.streams import (documents, encode_corpus, encode_documents, eval_windows,
                               gutenberg_books, load_tokens, random_windows, save_tokens,
                               train_batches, unigram_baseline)
from lapr.data.tokenizer import load_tokenizer, train_tokenizer

__all__ = ["DATASETS", "TOKENIZERS", "cache_dir", "known_names", "materialize", "read_bytes",
           "read_text", "verify_all", "load_tokenizer", "train_tokenizer", "documents",
           "encode_corpus", "encode_documents", "eval_windows", "gutenberg_books", "load_tokens",
           "random_windows", "save_tokens", "train_batches", "unigram_baseline",
           "encode_hub_dataset"]
