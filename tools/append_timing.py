"""Median time of one ``ResultsDir.append`` at a given file size: flat if appends are O(1) per record.

    python tools/append_timing.py [--records 5000] [--bytes 10600] [--dir DIR]

Records of about ``--bytes`` each (issue 13: 5,000 records = 53 MB); prints the median ms per append
after 100 records and after ``--records`` records, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sdsuite.store.results import ResultsDir


def record(i: int, size: int) -> dict:
    return {"schema_version": 1, "case": {"i": i}, "case_id": f"c{i}", "status": "ok", "metrics": {}, "pad": "x" * size}


def median_ms(rd: ResultsDir, start: int, n: int, size: int) -> float:
    times = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        rd.append(record(i, size))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--bytes", type=int, default=10600)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        rd = ResultsDir(Path(d))
        for i in range(100 - 20):
            rd.append(record(i, a.bytes))
        at_100 = median_ms(rd, 80, 20, a.bytes)  # appends 81..100
        for i in range(100, a.records - 20):
            rd.append(record(i, a.bytes))
        at_n = median_ms(rd, a.records - 20, 20, a.bytes)  # appends up to --records
        size = rd.results_path.stat().st_size
    print(
        f"median ms per append: {at_100:.2f} at 100 records, {at_n:.2f} at {a.records} records "
        f"({size / 1e6:.0f} MB file)"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
