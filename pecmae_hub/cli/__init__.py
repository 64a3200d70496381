"""``pecmae`` command line: one sub-command per stage, defined in the modules of this package.

Each command module exposes ``register_cli(subparsers)``, which adds its sub-parser(s) whose ``func``
default takes the parsed ``argparse.Namespace``. The table of commands is :mod:`pecmae_hub.cli.commands`;
a module is imported only for the command being run, so ``pecmae --help`` imports no torch.
This package is the only place that turns typed errors into exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pecmae_hub import __version__
from pecmae_hub.cli.commands import COMMANDS
from pecmae_hub.errors import PecmaeError

#: the first commands to try, shown under ``pecmae --help`` (they work offline on the embedded model)
TRY_THIS = """try this (offline, with the embedded gm-solos model and the shipped example clips):
  pecmae classify examples/                         a table of label, confidence and in-domain per clip
  pecmae classify examples/ --out predictions.csv   every score and the prototypes behind each answer
  pecmae sonify --prototype violin:0 --out violin.wav   listen to what the model calls typical violin
  pecmae app                                        the web app on http://127.0.0.1:7860

`pecmae COMMAND --help` lists a command's options."""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``pecmae`` parser. Only the module of the command named in ``argv`` is imported and
    registers its full parser; every other command is listed from :data:`COMMANDS` alone."""
    parser = argparse.ArgumentParser(
        prog="pecmae",
        description="PECMAE Hub: interpretable prototype-based music audio classification.",
        epilog=TRY_THIS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    module_name = COMMANDS[wanted][0] if wanted in COMMANDS else None
    if module_name is not None:
        importlib.import_module(module_name).register_cli(sub)
    for name, (module, help_text) in COMMANDS.items():
        if module != module_name:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    finished = False
    try:
        result = args.func(args)
        finished = True
    except PecmaeError as exc:
        print(f"pecmae {args.command}{_rank()}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130
    finally:
        if "pecmae_hub.distributed" in sys.modules:  # this command ran under accelerate launch
            sys.modules["pecmae_hub.distributed"].leave(finished)
    return int(result or 0)


def _rank() -> str:
    """`` (rank 1 of 4)`` under ``accelerate launch``, so that every message names the process it came from."""
    from pecmae_hub.distributed import launched

    if not launched():
        return ""
    from pecmae_hub.distributed import rank_label

    try:
        return f" ({rank_label()})"
    except PecmaeError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
