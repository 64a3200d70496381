"""``pecmae`` command line: one sub-command per stage; each stage module registers its own parser.

Stage modules expose ``register_cli(subparsers)``, which adds a sub-parser whose ``func`` default
takes the parsed ``argparse.Namespace``. Modules are imported only when building the parser, and the
heavy libraries (torch, gradio, diffusers) only inside the stage functions.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pecmae_hub.errors import PecmaeError

# module path -> the sub-commands it registers (kept in the order `pecmae --help` lists them)
STAGE_MODULES = [
    "pecmae_hub.cli.convert",   # convert
    "pecmae_hub.cli.extract",   # extract
    "pecmae_hub.cli.train",     # train
    "pecmae_hub.cli.evaluate",  # evaluate
    "pecmae_hub.cli.classify",  # classify, sonify, push
    "pecmae_hub.cli.data",      # data gm-solos
    "pecmae_hub.cli.recipe",    # recipe gm-solos
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pecmae",
        description="PECMAE Hub: interpretable prototype-based music audio classification.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not installed in this build
                continue
            raise
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except PecmaeError as exc:
        print(f"pecmae {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
