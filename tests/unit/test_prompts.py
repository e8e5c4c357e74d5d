"""Prompt sets: built-in set, deterministic COCO caption subsets, text files, clear file errors."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdsuite.core.errors import InputFileError, UsageError
from sdsuite.spec.prompts import (
    STANDARD_PROMPTS,
    builtin_prompts,
    load_coco_captions,
    load_prompt_set,
    load_text_prompts,
)

N_IMAGES = 30


def _annotations(shuffle_seed: int | None = None) -> dict:
    """Synthetic COCO captions: image i has 1 + i % 5 captions; the lowest id reads 'image i first caption'."""
    anns = []
    next_id = 1000
    for img in range(1, N_IMAGES + 1):
        for k in range(1 + img % 5):
            text = f"image {img} first caption" if k == 0 else f"  image {img}   other caption {k} "
            anns.append({"image_id": img * 7, "id": next_id, "caption": text})
            next_id += 1
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(anns)
    return {"info": {"year": 2017}, "images": [{"id": i * 7} for i in range(1, N_IMAGES + 1)], "annotations": anns}


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(_annotations()))
    return path


def test_builtin_set():
    assert len(builtin_prompts()) == len(STANDARD_PROMPTS) >= 10
    assert len(set(STANDARD_PROMPTS)) == len(STANDARD_PROMPTS)
    assert builtin_prompts(3).prompts == STANDARD_PROMPTS[:3]
    assert load_prompt_set("builtin", 2).prompts == STANDARD_PROMPTS[:2]


def test_coco_subset_is_one_first_caption_per_image_and_seed_42_by_default(coco_file):
    ps = load_coco_captions(coco_file, 10)
    assert len(ps) == 10 and ps.seed == 42
    assert all(p.startswith("image ") and p.endswith("first caption") for p in ps.prompts)
    assert len({p.split()[1] for p in ps.prompts}) == 10  # ten different images
    assert ps == load_coco_captions(coco_file, 10, seed=42)
    assert ps.prompts != load_coco_captions(coco_file, 10, seed=7).prompts
    assert ps.to_dict()["source"] == str(coco_file)


@given(st.integers(0, 10_000), st.integers(1, N_IMAGES))
def test_coco_subset_does_not_depend_on_file_order(tmp_path_factory, shuffle_seed, n):
    d = tmp_path_factory.mktemp("coco")
    ordered, shuffled = d / "a.json", d / "b.json"
    ordered.write_text(json.dumps(_annotations()))
    shuffled.write_text(json.dumps(_annotations(shuffle_seed)))
    a, b = load_coco_captions(ordered, n), load_coco_captions(shuffled, n)
    assert a.prompts == b.prompts and a.ids == b.ids and len(a) == n


def test_2014_format_and_whitespace_normalisation(tmp_path):
    data = {"info": {"year": 2014}, "annotations": [{"image_id": 9, "id": 3, "caption": " A  man\nriding a wave. "}]}
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(data))
    assert load_prompt_set(str(path)).prompts == ("A man riding a wave.",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1"),
        (json.dumps({"images": []}), "no 'annotations' list"),
        (json.dumps([1, 2]), "no 'annotations' list"),
        (json.dumps({"annotations": [{"image_id": 1, "caption": "x"}]}), "annotation #0 lacks"),
        (json.dumps({"annotations": [{"image_id": 1, "id": 1, "caption": "   "}]}), "no non-empty caption"),
    ],
)
def test_corrupt_files_name_the_path(tmp_path, content, message):
    path = tmp_path / "captions_val2017.json"
    path.write_text(content)
    with pytest.raises(InputFileError) as err:
        load_coco_captions(path, 1)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file_and_bad_counts(tmp_path, coco_file):
    with pytest.raises(InputFileError, match="missing.json does not exist"):
        load_coco_captions(tmp_path / "missing.json", 5)
    with pytest.raises(UsageError, match=f"asked for {N_IMAGES + 1} prompts but .* holds only {N_IMAGES}"):
        load_coco_captions(coco_file, N_IMAGES + 1)
    with pytest.raises(UsageError, match=">= 1"):
        load_coco_captions(coco_file, 0)


def test_text_prompt_files(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\na cat\n\n  a   dog \n")
    assert load_prompt_set(str(path)).prompts == ("a cat", "a dog")
    assert load_text_prompts(path, 1).prompts == ("a cat",)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputFileError, match="empty.txt holds no prompt"):
        load_text_prompts(tmp_path / "empty.txt")
