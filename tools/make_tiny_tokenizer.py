"""Regenerate the tiny CLIP BPE tokenizer files shipped in sdsuite/assets/tiny_clip_tokenizer.

The embedded tiny models need a tokenizer that works with no network. This script learns a small
byte-pair merge table (CLIP's format: byte-level alphabet, ``</w>`` end-of-word marker) from the
built-in prompt set, so the files are reproducible from the repository alone:

    python tools/make_tiny_tokenizer.py
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

N_MERGES = 480
OUT = Path(__file__).resolve().parents[1] / "sdsuite" / "assets" / "tiny_clip_tokenizer"

CORPUS = """
a photograph of an astronaut riding a horse on the moon
a painting of a fox sitting in a field at sunrise, oil on canvas
a red sports car parked in front of a modern house, high detail
a bowl of fruit on a wooden table, still life, soft light
a cat wearing a wizard hat, digital art, trending on artstation
a futuristic city skyline at night with neon lights and flying cars
an ancient castle on a cliff above the sea during a storm
portrait of an old man with a beard, black and white photography
a cozy cabin in a snowy forest, warm light from the windows
a watercolor illustration of a lighthouse by the ocean
a bustling street market in a small town, people and colorful stalls
a close up of a flower with dew drops, macro photography
a robot reading a book in a library, cinematic lighting
a mountain lake reflecting the sky at dawn, landscape
a dog playing with a ball in the park on a sunny day
blurry, low quality, deformed, ugly, bad anatomy, watermark, text
the quick brown fox jumps over the lazy dog
"""


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 reversible byte -> printable unicode map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )  # fmt: skip
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def main() -> None:
    byte_map = bytes_to_unicode()
    alphabet = list(byte_map.values())
    words = collections.Counter(re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", CORPUS.lower()))
    # Each word as a tuple of symbols, the last one carrying the end-of-word marker.
    splits = {
        w: tuple("".join(byte_map[b] for b in ch.encode()) for ch in w[:-1]) + (byte_map[w[-1].encode()[0]] + "</w>",)
        for w in words
    }
    merges: list[tuple[str, str]] = []
    for _ in range(N_MERGES):
        pairs: collections.Counter = collections.Counter()
        for w, syms in splits.items():
            for a, b in zip(syms, syms[1:], strict=False):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        # Ties broken lexicographically so the output is deterministic.
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w, syms in splits.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            splits[w] = tuple(out)
    vocab_tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {}
    for tok in vocab_tokens:
        vocab.setdefault(tok, len(vocab))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main()
