"""Known import-time noise of optional packages, dropped before a front end (the CLI, a launched worker) imports
them, so a command's output is what the user asked for. Imports nothing heavy: it runs first in every command."""

from __future__ import annotations

import os

# Import-time warnings about optional pieces sdsuite does not use, dropped by message (logger, message prefix):
# torchao's CUDA kernels that do not load on a CPU build, the torchao tensor types diffusers registers when it can,
# and a deprecation torchao triggers inside torch. Everything else these loggers say still shows.
IMPORT_NOISE = (
    ("torchao", "Failed to load "),
    ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects"),
    ("torch.utils._pytree", "%s is an Enum subclass and is now natively supported"),
)


class _DropMessages:
    """A logging filter dropping the records whose message template starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party_imports() -> None:
    """Keep a command's output to what the user asked for: drop the import-time warnings of IMPORT_NOISE (and
    transformers' notes about optional image processors; an explicit TRANSFORMERS_VERBOSITY wins)."""
    import logging

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, prefix in IMPORT_NOISE:
        by_logger[name] = (*by_logger.get(name, ()), prefix)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
