"""framefusion: fewer video tokens inside video LLMs. Run without a command for the demo."""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framefusion", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name.replace('-', '_')}", __package__)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["demo"] + argv
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args._run(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        print(f"framefusion: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("framefusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
