"""The ``sdsuite`` command line. Thin: it parses flags and calls the same engine as the pytest plugin.

Exit codes: 0 success, 1 a check or benchmark failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sdsuite.cli.commands import COMMANDS, command_modules
from sdsuite.core.errors import SdsuiteError
from sdsuite.core.quiet import quiet_third_party_imports

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The commands, their modules and help lines: sdsuite.cli.commands. Each module registers its commands with
# ``register(subparsers)``; a command's handler takes the parsed args and returns an exit code.
COMMAND_MODULES = command_modules()


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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser. Without ``argv``: every command's full parser (for tests and docs). With ``argv``: the full
    parser of the command ``argv`` names only, the other commands listed by name and help (sdsuite.cli.commands), so
    that what a command does not need is never imported (``--help`` and an unknown command import no command)."""
    parser = _Parser(prog="sdsuite", description="Stable Diffusion inference benchmarks: speed, memory, GPU energy.")
    from sdsuite import __version__

    parser.add_argument("--version", action="version", version=f"sdsuite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = COMMANDS.get(_command_of(argv), (None,))[0] if argv is not None else None
    for name, (module, help_line) in COMMANDS.items():
        if name in sub.choices:
            continue  # registered with an earlier command of its module
        if argv is None or module == wanted:
            importlib.import_module(module).register(sub)  # all of the module's commands, at its first one's place
        else:
            sub.add_parser(name, help=help_line, add_help=False)  # listed only: argv does not run it
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (``sdsuite`` has no option taking a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
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
    """A GPU whose clocks could not be restored makes the command fail (sdsuite.gpu.clocks.restore_verdict)."""
    clocks = sys.modules.get("sdsuite.gpu.clocks")  # imported only by commands that can change clocks
    return clocks.restore_verdict(rc) if clocks is not None else rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
