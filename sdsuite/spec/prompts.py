"""Prompt sets: a built-in standard set, COCO caption files (2014 or 2017) and plain text files.

A COCO subset is deterministic: one caption per image (the one with the lowest annotation id, so
the choice does not depend on the order of the file), images sorted by id, then ``N`` of them drawn
with ``random.Random(seed)`` (seed 42 by default). The same file, N and seed give the same prompts
on every machine and Python version.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from sdsuite.core.errors import InputFileError, UsageError

DEFAULT_SEED = 42
BUILTIN = "builtin"

# Varied subjects, styles and lengths (short, long, text rendering, counting, people, scenes).
STANDARD_PROMPTS: tuple[str, ...] = (
    "a photograph of an astronaut riding a horse on the moon",
    "a red fox sitting in fresh snow, morning light, telephoto",
    "an oil painting of a lighthouse on a cliff during a storm",
    "a bowl of ramen with a soft-boiled egg, overhead shot, studio lighting",
    "a cozy reading nook with a large window, rain outside, warm lamp",
    "three yellow rubber ducks floating in a blue bathtub",
    "a street market in Marrakech at dusk, crowded, vivid colours",
    "a portrait of an elderly fisherman with a grey beard, 85mm, shallow depth of field",
    "a futuristic city skyline at night with flying cars and neon signs",
    "a watercolor illustration of a hummingbird drinking from a flower",
    "a wooden sign that says OPEN hanging on a bakery door",
    "an isometric 3d render of a tiny island with a windmill",
    "a golden retriever puppy playing with a tennis ball on a lawn",
    "a snow-capped mountain reflected in a still alpine lake at sunrise",
    "a minimalist black and white photograph of a spiral staircase",
    "a plate of sushi on a slate board next to chopsticks",
)


@dataclass(frozen=True)
class PromptSet:
    """An ordered set of prompts plus where it came from (recorded with results)."""

    name: str
    prompts: tuple[str, ...]
    source: str
    seed: int | None = None
    ids: tuple[int, ...] = ()  # COCO annotation ids, when the prompts are COCO captions

    def __len__(self) -> int:
        return len(self.prompts)

    def items(self) -> list[tuple[str, str]]:
        """(prompt id, text) pairs; ids are short and stable (``builtin3``, ``coco391895`` = annotation id,
        ``file2``)."""
        if self.ids:
            return [(f"coco{i}", p) for i, p in zip(self.ids, self.prompts, strict=True)]
        prefix = "builtin" if self.source == BUILTIN else "file"
        return [(f"{prefix}{i}", p) for i, p in enumerate(self.prompts)]

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


def _check_n(n: int | None, available: int, what: str) -> int:
    if n is None:
        return available
    if n < 1:
        raise UsageError(f"the number of prompts must be >= 1, got {n}.")
    if n > available:
        raise UsageError(f"asked for {n} prompts but {what} holds only {available}.")
    return n


def builtin_prompts(n: int | None = None) -> PromptSet:
    """The first ``n`` prompts of the standard set (all of them by default)."""
    n = _check_n(n, len(STANDARD_PROMPTS), "the built-in set")
    return PromptSet(BUILTIN, STANDARD_PROMPTS[:n], source=BUILTIN)


def _normalize(caption: str) -> str:
    return " ".join(caption.split())


def load_coco_captions(path: str | os.PathLike, n: int | None = None, seed: int = DEFAULT_SEED) -> PromptSet:
    """A deterministic subset of ``n`` captions (one per image) from a COCO captions file (2014 or 2017 format)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(
            f"COCO captions file {p} does not exist; pass the path of captions_val2017.json (or captions_val2014.json)."
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"COCO captions file {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"COCO captions file {p} could not be read ({exc}).") from None
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise InputFileError(
            f"{p} has no 'annotations' list: it is not a COCO captions file "
            f"(captions_val2017.json / captions_val2014.json)."
        )
    best: dict[int, tuple[int, str]] = {}
    for i, ann in enumerate(anns):
        if (
            not isinstance(ann, dict)
            or not isinstance(ann.get("caption"), str)
            or not isinstance(ann.get("image_id"), int)
            or not isinstance(ann.get("id"), int)
        ):
            raise InputFileError(
                f"{p}: annotation #{i} lacks an integer 'id', an integer 'image_id' or a string 'caption'."
            )
        caption = _normalize(ann["caption"])
        if not caption:
            continue
        prev = best.get(ann["image_id"])
        if prev is None or ann["id"] < prev[0]:
            best[ann["image_id"]] = (ann["id"], caption)
    if not best:
        raise InputFileError(f"{p} holds no non-empty caption.")
    images = sorted(best)
    n = _check_n(n, len(images), f"{p} (captioned images)")
    chosen = random.Random(seed).sample(images, n)
    return PromptSet(
        name=f"coco:{p.name}",
        prompts=tuple(best[i][1] for i in chosen),
        source=str(p),
        seed=seed,
        ids=tuple(best[i][0] for i in chosen),
    )


def load_text_prompts(path: str | os.PathLike, n: int | None = None) -> PromptSet:
    """Prompts from a UTF-8 text file, one per line (blank lines and ``#`` comments skipped); the first ``n``."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"prompt file {p} does not exist.")
    try:
        lines = [_normalize(line) for line in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"prompt file {p} could not be read as UTF-8 text ({exc}).") from None
    prompts = tuple(line for line in lines if line and not line.startswith("#"))
    if not prompts:
        raise InputFileError(f"prompt file {p} holds no prompt (one per line expected).")
    n = _check_n(n, len(prompts), str(p))
    return PromptSet(f"file:{p.name}", prompts[:n], source=str(p))


def load_prompt_set(source: str = BUILTIN, n: int | None = None, seed: int = DEFAULT_SEED) -> PromptSet:
    """``builtin``, a COCO captions ``.json`` file, or a text file with one prompt per line."""
    if source == BUILTIN:
        return builtin_prompts(n)
    if str(source).lower().endswith(".json"):
        return load_coco_captions(source, n, seed)
    return load_text_prompts(source, n)
