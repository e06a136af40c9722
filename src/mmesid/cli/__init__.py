"""The `mmesid` command line: a thin layer over the library.

Each module in this package defines `register(subparsers)` for one command group and is found
automatically, so a new stage adds a module here and touches nothing else. User errors
(MmesidError) end with one clear message on stderr and exit status 2.

Command modules import torch and the stage packages only inside their command functions, so
`mmesid --help` stays fast; `mmesid --version` is answered before any command module is imported.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from ..errors import MmesidError


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="mmesid", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mmesid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        module.register(sub)
    return parser


def _asks_version(argv: list[str]) -> bool:
    """`--version` among the options before the command (where argparse would accept it)."""
    for arg in argv:
        if arg == "--version":
            return True
        if not arg.startswith("-"):
            return False
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _asks_version(argv):
        from .. import __version__

        print(f"mmesid {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "mmesid " + " ".join(argv)  # recorded in run.json by the training commands
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if getattr(args, "uses_torch", True):
            from ..utils import flush_subnormals

            flush_subnormals()  # before torch starts its threads, so that they inherit it
        rc = args.func(args)
    except MmesidError as e:
        print(f"mmesid: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmesid: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
