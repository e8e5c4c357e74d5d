"""Profiling spans (time, memory, nesting, pipeline stages) and the torch.profiler trace writer."""

from __future__ import annotations

import json
import mmap

import pytest
import torch

from sdsuite.core.errors import UsageError
from sdsuite.measure.profiling import DECODE, DENOISE, TEXT_ENCODE, SpanRecorder, instrument_pipeline, trace
from sdsuite.pipelines.build import build_in_code
from sdsuite.pipelines.registry import get_variant

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_sd():
    return build_in_code(get_variant("tiny-sd"))


def _generate(pipe, steps=2):
    latents = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(0))
    return pipe("a red bicycle", height=SIZE, width=SIZE, num_inference_steps=steps, latents=latents, output_type="pt")


def test_nested_spans_record_order_parent_and_time():
    rec = SpanRecorder()
    with rec.span("load"):
        with rec.span("setup:vae_tiling"):
            pass
    with rec.span("denoise"):
        pass
    names = [s.name for s in rec.spans]
    assert names == ["setup:vae_tiling", "load", "denoise"]  # closing order
    inner, outer, last = rec.spans
    assert inner.parent == "load" and inner.depth == 1 and outer.parent is None and outer.depth == 0
    assert outer.duration_s >= inner.duration_s >= 0
    assert inner.start_s >= outer.start_s and last.start_s >= outer.start_s + outer.duration_s
    assert json.loads(json.dumps(rec.to_record()))["summary"]["load"]["count"] == 1


def test_span_peak_memory_sees_an_allocation_and_carries_to_the_parent():
    rec = SpanRecorder()
    if rec._memory.peak() is None:
        pytest.skip("this platform exposes no peak memory")
    size = 64 * 1024 * 1024
    with rec.span("outer"):
        with rec.span("inner"):
            # Fresh anonymous pages, touched: RSS grows by ``size`` whatever the worker ran before (a heap allocation
            # could reuse pages an earlier test freed but the allocator kept resident, and then RSS would not grow).
            x = mmap.mmap(-1, size)
            for offset in range(0, size, mmap.PAGESIZE):
                x[offset] = 1
            x.close()  # unmapped: RSS drops again before "after"
        with rec.span("after"):
            pass
    by = {s.name: s for s in rec.spans}
    assert rec.memory_kind == "process_peak_rss"
    if rec.to_record()["memory_note"] is None:  # the peak watermark could be reset: spans are separable
        assert by["inner"].memory_peak_bytes - by["inner"].memory_start_bytes >= size * 0.9
        assert by["after"].memory_peak_bytes < by["inner"].memory_peak_bytes
    assert by["outer"].memory_peak_bytes >= by["inner"].memory_peak_bytes


def test_ending_the_wrong_span_is_an_error():
    rec = SpanRecorder()
    rec.begin("a")
    with pytest.raises(UsageError, match="'b' ended while 'a'"):
        rec.end("b")


def test_setup_times_become_spans():
    rec = SpanRecorder()
    rec.add_setup({"attention_eager": 0.5, "vae_tiling": 0.25})
    assert {s.name: s.duration_s for s in rec.spans} == {"setup:attention_eager": 0.5, "setup:vae_tiling": 0.25}


@pytest.mark.parametrize("per_step", [False, True])
def test_pipeline_stages_are_recorded_and_wrappers_removed(tiny_sd, per_step):
    rec = SpanRecorder()
    evals = []
    handle = tiny_sd.unet.register_forward_pre_hook(lambda m, a: evals.append(1))
    try:
        with instrument_pipeline(tiny_sd, rec, per_step=per_step):
            _generate(tiny_sd)
    finally:
        handle.remove()
    top = [s.name for s in rec.spans if s.depth == 0]
    assert top == [TEXT_ENCODE, DENOISE, DECODE]
    unet_spans = [s for s in rec.spans if s.name == "unet"]
    assert len(unet_spans) == (len(evals) if per_step else 0)
    assert all(s.parent == DENOISE for s in unet_spans)
    assert "encode_prompt" not in vars(tiny_sd) and "decode" not in vars(tiny_sd.vae)
    assert not tiny_sd.unet._forward_pre_hooks and not tiny_sd.unet._forward_hooks


def test_latent_output_still_closes_denoise(tiny_sd):
    rec = SpanRecorder()
    with instrument_pipeline(tiny_sd, rec):
        tiny_sd("a red bicycle", height=SIZE, width=SIZE, num_inference_steps=1, output_type="latent")
    assert [s.name for s in rec.spans] == [TEXT_ENCODE, DENOISE]


@pytest.mark.slow  # end to end on the tiny pipelines (~0.5-5 s): kept out of `pytest -m quick`
def test_trace_is_written_and_holds_the_named_spans(tiny_sd, tmp_path):
    rec = SpanRecorder()
    with trace(tmp_path / "traces", "tiny-sd/default/fp32", device="cpu") as result:
        with instrument_pipeline(tiny_sd, rec):
            _generate(tiny_sd, steps=1)
    assert result.path == tmp_path / "traces" / "tiny-sd_default_fp32.trace.json"
    events = json.loads(result.path.read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    assert {TEXT_ENCODE, DENOISE, DECODE} <= names
    assert "aten::" in result.table


def test_no_trace_dir_profiles_nothing(tmp_path):
    with trace(None, "x") as result:
        pass
    assert result.path is None and list(tmp_path.iterdir()) == []


def test_unwritable_trace_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot be created"):
        with trace(blocker / "sub", "x"):
            pass
