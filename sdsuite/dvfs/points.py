"""Sweep points as data: the clock orders, what counts as finished, and the identity keys of points and records.

Torch-free (sdsuite.dvfs.sweep_engine, which measures, re-exports these): the launcher merges and resumes by these
keys, and the CLI builds ``sdsuite sweep``'s flags from these choices without loading the measuring stack.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

ORDERS = ("descending", "ascending", "shuffled")
FINISHED_STATUSES = ("ok", "skipped")  # a failed point is measured again when the sweep resumes
DEFAULT_MAX_THROTTLE_PCT = 5.0


def point_key(identity: Mapping[str, Any]) -> str:
    """Stable short hash of a point's identity (case, device, settings)."""
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def record_point_key(rec: Mapping[str, Any]) -> str | None:
    """The point key of a record: a sweep point's (``sweep.point_key``) or a launched run case's
    (``scaleout.point_key``)."""
    for block in ("sweep", "scaleout"):
        value = rec.get(block)
        if isinstance(value, dict) and value.get("point_key"):
            return str(value["point_key"])
    return None


def finished_keys(records: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Point keys of finished (ok or skipped) sweep or launched-run records."""
    return frozenset(k for r in records if (k := record_point_key(r)) and r.get("status") in FINISHED_STATUSES)
