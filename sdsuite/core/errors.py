"""Errors a user can cause, each ending in one clear sentence; the CLI maps them to exit codes."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SdsuiteError(Exception):
    """Base class for errors sdsuite reports to the user without a traceback."""

    exit_code = 2


class UsageError(SdsuiteError):
    """Bad flag, unknown name or invalid value: exit code 2."""


class InputFileError(SdsuiteError):
    """A corrupt or mismatched results/baseline file, reported with its path: exit code 2."""


class WeightsNotFoundError(SdsuiteError):
    """Real weights for a variant are not available locally."""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> UsageError:
    """Build the error for an unknown name, listing the valid choices (closest first)."""
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UsageError(f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}.{hint}")
