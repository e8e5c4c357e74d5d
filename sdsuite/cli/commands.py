"""The commands of ``sdsuite``: each one's name, the module that builds its parser and handles it, and its help line.

Data only (no import of the command modules): the CLI builds the parser of the one command it runs and lists the
others by name and help, so ``sdsuite --help``, ``sdsuite list`` or a usage error answers without loading what the
other commands need. A command module's ``register(subparsers)`` adds its commands with ``help=help_of(name)``.
"""

from __future__ import annotations

# name -> (module, one-line help), in ``sdsuite --help`` order. A new command adds one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("sdsuite.cli.run", "measure one case or a grid of cases"),
    "list": ("sdsuite.cli.info", "variants, schedulers and precisions, with details"),
    "env": ("sdsuite.cli.info", "environment and GPU information"),
    "compare": ("sdsuite.cli.baseline", "compare a results directory with stored baselines (exit 1 on regression)"),
    "baseline": ("sdsuite.cli.baseline", "manage stored baselines"),
    "sweep": ("sdsuite.cli.sweep", "DVFS sweep: every case at every SM clock, resumable, with optima"),
    "report": ("sdsuite.cli.report", "DVFS report and plots of results directories (compares several side by side)"),
    "images": ("sdsuite.cli.images", "manage saved images (clean)"),
    "options": ("sdsuite.cli.options", "optimization options: what runs here, and effect reports of results"),
    "validate": (
        "sdsuite.cli.validate",
        "CLIP score / FID / IS of a configuration over a prompt set, with acceptance windows",
    ),
    "status": ("sdsuite.cli.status", "progress of a scale-out sweep or run directory (merges finished tasks)"),
}


def help_of(name: str) -> str:
    """The help line of command ``name`` (``sdsuite --help``)."""
    return COMMANDS[name][1]


def command_modules() -> list[str]:
    """The command modules, each once, in ``--help`` order."""
    return list(dict.fromkeys(module for module, _ in COMMANDS.values()))
