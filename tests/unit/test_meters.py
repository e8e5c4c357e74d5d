import torch

from sdsuite.measure.meters.flops import count_flops
from sdsuite.measure.meters.memory import PeakMemoryMeter
from sdsuite.measure.meters.timing import Timeline
from sdsuite.measure.runner import image_fingerprint


def test_timeline_marks_are_ordered_and_inside_the_window(cpu):
    tl = Timeline(cpu)
    tl.start()
    tl.mark("a")
    sum(range(10000))
    tl.mark("b")
    wall = tl.stop()
    (na, ta), (nb, tb) = tl.marks()
    assert (na, nb) == ("a", "b") and 0 <= ta <= tb <= wall


def test_flops_of_a_matmul_are_exact():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_flops_count_cpu_sdpa_like_eager_attention():
    q = torch.randn(1, 2, 16, 8)
    sdpa = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    eager = count_flops(lambda: (q @ q.transpose(-1, -2)).softmax(-1) @ q)
    assert sdpa == eager > 0


def test_peak_rss_window_sees_a_large_allocation(cpu):
    from sdsuite.measure.meters.memory import _read_status_kb

    meter = PeakMemoryMeter(cpu)
    meter.reset()
    rss_before = _read_status_kb("VmRSS") * 1024
    x = torch.ones(256 * 1024 * 1024 // 4)  # 256 MiB, touched
    peak = meter.peak()
    del x
    assert meter.kind == "process_peak_rss"
    # Other threads can only raise the peak, so this cannot fail spuriously.
    assert peak - rss_before >= 192 * 1024 * 1024


def test_fingerprint_flags_invalid_images():
    ok = image_fingerprint(torch.rand(1, 3, 8, 8))
    assert not (ok["has_nan"] or ok["has_inf"] or ok["blank"])
    nan = torch.rand(1, 3, 8, 8)
    nan[0, 0, 0, 0] = float("nan")
    assert image_fingerprint(nan)["has_nan"]
    assert image_fingerprint(torch.zeros(1, 3, 8, 8))["blank"]
    assert image_fingerprint(torch.full((1, 3, 8, 8), 0.5))["blank"]
