"""The tokenizers shipped inside the package for the embedded models (and random-weight runs): no network."""

from __future__ import annotations

import importlib.resources

CLIP_TOKENIZER_DIR = "assets/tiny_clip_tokenizer"  # tools/make_tiny_tokenizer.py
T5_TOKENIZER_DIR = "assets/tiny_t5_tokenizer"  # tools/make_tiny_t5_tokenizer.py


def tiny_tokenizer():
    """The CLIP BPE tokenizer shipped inside the package (works with no network)."""
    from transformers import CLIPTokenizer

    root = importlib.resources.files("sdsuite") / CLIP_TOKENIZER_DIR
    with importlib.resources.as_file(root) as path:
        return CLIPTokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"), model_max_length=77)


def tiny_t5_tokenizer():
    """The Unigram T5 tokenizer shipped inside the package (230 pieces, works with no network)."""
    from transformers import T5Tokenizer

    root = importlib.resources.files("sdsuite") / T5_TOKENIZER_DIR
    with importlib.resources.as_file(root) as path:
        return T5Tokenizer.from_pretrained(str(path), local_files_only=True)
