"""The ``sdsuite`` command line. Thin: it parses flags and calls the same engine as the pytest plugin.

Exit codes: 0 success, 1 a check or benchmark failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from sdsuite.core.errors import SdsuiteError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Each module registers its subcommands with ``register(subparsers)``; a command's handler takes
# the parsed args and returns an exit code. New command groups add one line here.
COMMAND_MODULES = [
    "sdsuite.cli.run",
    "sdsuite.cli.info",
    "sdsuite.cli.baseline",
    "sdsuite.cli.sweep",
    "sdsuite.cli.report",
    "sdsuite.cli.images",
    "sdsuite.cli.options",
    "sdsuite.cli.validate",
    "sdsuite.cli.status",
]


class _Parser(argparse.ArgumentParser):
    """One line per usage error (no usage dump: the line names the valid choices), exit 2; plain backticks in help."""

    def error(self, message: str):
        if "required: COMMAND" in message or "argument COMMAND: invalid choice" in message:
            sub = next(a for a in self._actions if isinstance(a, argparse._SubParsersAction))
            message = message.split(" (choose from")[0] + f" (commands: {', '.join(sub.choices)}; sdsuite --help)"
        elif self.prog != "sdsuite":
            message = f"{message} (`{self.prog} --help` lists the flags)"
        self.exit(EXIT_USAGE, f"sdsuite: error: {' '.join(message.split())}\n")

    def format_help(self) -> str:  # module docstrings are reStructuredText: ``x`` reads as `x` in a terminal
        return super().format_help().replace("``", "`")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and docs)."""
    parser = _Parser(prog="sdsuite", description="Stable Diffusion inference benchmarks: speed, memory, GPU energy.")
    from sdsuite import __version__

    parser.add_argument("--version", action="version", version=f"sdsuite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


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
    """Keep the CLI's output to what the user asked for: drop the import-time warnings of IMPORT_NOISE (and
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


EXIT_BROKEN_PIPE = (
    128 + 13
)  # 128 + SIGPIPE: what a shell shows for a tool whose reader went away (``sdsuite report | head``)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdsuite`` script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _stdout_gone()
    except SystemExit as exc:  # rich answers a broken pipe by pointing stdout at /dev/null and exiting 1
        if exc.code == 1 and _stdout_is_devnull():
            return EXIT_BROKEN_PIPE
        raise


def _stdout_is_devnull() -> bool:
    try:
        out, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino) == (null.st_dev, null.st_ino)


def _stdout_gone() -> int:
    """The reader of stdout went away: exit quietly, as ``head`` expects (no traceback, nothing more on stdout)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    quiet_third_party_imports()
    parser = build_parser()
    args = parser.parse_args(argv)
    clocks = sys.modules.get("sdsuite.gpu.clocks")
    if clocks is not None:
        clocks.forget_restore_failures()  # each command answers for its own restores (in-process callers run several)
    try:
        rc = int(args.handler(args) or 0)
    except SdsuiteError as exc:
        print(f"sdsuite: error: {exc}", file=sys.stderr)
        rc = exc.exit_code
    except KeyboardInterrupt:
        print("sdsuite: interrupted; every record finished before Ctrl-C is kept.", file=sys.stderr)
        rc = 130
    return _restore_verdict(rc)


def _restore_verdict(rc: int) -> int:
    """A GPU whose clocks could not be restored makes the command fail, naming the GPU and the reset command."""
    clocks = sys.modules.get("sdsuite.gpu.clocks")  # imported only by commands that can change clocks
    failed = clocks.restore_failure_message() if clocks is not None else None
    if failed:
        for line in failed.splitlines():
            print(f"sdsuite: error: {line}", file=sys.stderr)
        return rc or 1
    return rc


def print_json(obj) -> None:
    """Machine-readable output on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
