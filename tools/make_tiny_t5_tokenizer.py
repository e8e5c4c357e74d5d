"""Generate the embedded tiny T5 tokenizer (sdsuite/assets/tiny_t5_tokenizer) offline.

A SentencePiece-style Unigram model (the kind T5 uses: Metaspace pre-tokenizer, </s> appended) trained with the
tokenizers library on the built-in prompts, 256 pieces, a few KB. Run once and commit the output:
``python tools/make_tiny_t5_tokenizer.py``; the result is deterministic for a given tokenizers version.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from sdsuite.spec.case import DEFAULT_PROMPT
from sdsuite.spec.prompts import STANDARD_PROMPTS

OUT = Path(__file__).resolve().parents[1] / "sdsuite" / "assets" / "tiny_t5_tokenizer"
VOCAB_SIZE = 256
SPECIAL = ["<pad>", "</s>", "<unk>"]  # T5's ids: pad 0, eos 1, unk 2


def build() -> Tokenizer:
    """Train the tiny Unigram tokenizer on the built-in prompts (plus every printable ASCII character)."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        unk_token="<unk>",
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        shrinking_factor=0.75,
    )
    tok.train_from_iterator([DEFAULT_PROMPT, *STANDARD_PROMPTS], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return tok


def main() -> None:
    """Write tokenizer.json and tokenizer_config.json for transformers' T5Tokenizer."""
    from transformers import T5Tokenizer

    OUT.mkdir(parents=True, exist_ok=True)
    raw = build()
    fast = T5Tokenizer(tokenizer_object=raw, extra_ids=0, model_max_length=512)
    fast.save_pretrained(str(OUT))
    (OUT / "special_tokens_map.json").unlink(missing_ok=True)
    # Compact JSON keeps the shipped file a few KB (save_pretrained indents it).
    path = OUT / "tokenizer.json"
    path.write_text(json.dumps(json.loads(path.read_text()), separators=(",", ":"), ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({sum(p.stat().st_size for p in OUT.iterdir())} bytes, {len(fast)} tokens)")


if __name__ == "__main__":
    main()
