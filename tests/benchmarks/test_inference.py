"""Inference benchmarks: variant x scheduler x precision (x frequency ``default``).

``pytest -m quick tests/benchmarks`` runs the tiny embedded models on the CPU in seconds;
``--full`` adds every scheduler, bf16 and the real variants (GPU); ``--variant``/``--scheduler``/...
select an explicit grid. Every case appends its record to --sdsuite-out.
"""


def test_inference(sd_case, sd_benchmark, sdsuite_config):
    record = sd_benchmark(sd_case)
    assert record["status"] == "ok"
    metrics = record["metrics"]
    assert metrics["latency_s"]["n"] == sdsuite_config.runs  # every measured run, none dropped or repeated
    assert len(metrics["step_latency_s"]["samples"]) == metrics["latency_s"]["n"] * sd_case.steps
    assert metrics["flops_per_image"]["value"] > 0
    assert record["image"]["deterministic"], "the same case gave different images on repeated runs"
