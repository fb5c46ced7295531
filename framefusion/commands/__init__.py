"""Subcommands of the ``framefusion`` command line, one module each.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Add a command by writing its module and naming it in ``COMMANDS``.
"""

COMMANDS = ["demo", "bench", "analyze", "run", "visualize", "web", "eval"]
