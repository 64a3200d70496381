"""`pecmae data ...`: generate data sets.

This module owns the ``data`` group; each data set adds its commands to the group's sub-parsers
through a ``register_<name>(datasets)`` function listed in :data:`DATASET_COMMANDS`.
"""

from __future__ import annotations

from pecmae_hub.cli.commands import add_progress_flag, command_help
from pecmae_hub.data.gm_solos.render import (
    BANKS,
    TEST_BANKS,
    TRAIN_BANKS,
    generate_dataset,
    read_metadata,
    render_examples,
)
from pecmae_hub.errors import ConfigError


def _cli_gm_solos(args) -> int:
    from pecmae_hub.extras import require_extra

    require_extra("data", "pecmae data gm-solos")
    if args.all_banks == bool(args.banks):
        raise ConfigError("pass either --all-banks or one or more --bank NAME")
    common = dict(seed=args.seed, progress=not args.no_progress, workers=args.workers, duration=args.duration)
    if args.all_banks:
        generate_dataset(args.out, TRAIN_BANKS, args.n_per_class, split_name=args.split or "train", **common)
        n_test = args.n_test_per_class if args.n_test_per_class is not None else args.n_per_class
        meta = generate_dataset(args.out, TEST_BANKS, n_test, split_name="test", **common)
    else:
        meta = generate_dataset(args.out, args.banks, args.n_per_class, split_name=args.split, **common)
    print(f"GM-Solos: {len(read_metadata(meta))} clips listed in {meta}")
    return 0


def _cli_examples(args) -> int:
    print("\n".join(map(str, render_examples(args.out, bank=args.bank, seed=args.seed))))
    return 0


def register_cli(subparsers) -> None:
    """Add the ``pecmae data`` group, then every data set's commands into it (:data:`DATASET_COMMANDS`)."""
    data = subparsers.add_parser("data", help=command_help("data"), description="Generate data sets.")
    data.set_defaults(func=lambda _args: data.print_help() or 2)
    datasets = data.add_subparsers(dest="data_command", metavar="DATASET")
    for register in DATASET_COMMANDS:
        register(datasets)


def register_gm_solos(datasets) -> None:
    """Add ``pecmae data gm-solos`` and ``pecmae data gm-solos-examples`` to the ``data`` group's sub-parsers."""
    p = datasets.add_parser(
        "gm-solos",
        help="render the GM-Solos instrument data set (8 Medley-Solos-DB classes)",
        description="Render GM-Solos clips with FluidSynth. Banks: "
        + ", ".join(f"{b} ({BANKS[b]})" for b in BANKS)
        + f"; {', '.join(TEST_BANKS)} is the held-out test bank.",
    )
    p.add_argument("out", help="output folder (WAVs + metadata.csv); existing clips are skipped")
    p.add_argument("--bank", action="append", dest="banks", choices=list(BANKS), help="bank to render (repeatable)")
    p.add_argument(
        "--all-banks",
        action="store_true",
        help=f"render {', '.join(TRAIN_BANKS)} with --split (default train) and {TEST_BANKS[0]} as test",
    )
    p.add_argument("--n-per-class", type=int, required=True, help="clips per class and bank")
    p.add_argument(
        "--n-test-per-class",
        type=int,
        default=None,
        help="with --all-banks: clips per class of the test bank (default: --n-per-class)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="split name written to metadata.csv (default: train/test by bank)")
    p.add_argument("--workers", type=int, default=1, choices=[1, 2], help="rendering processes")
    p.add_argument("--duration", type=float, default=3.0, help="clip length in seconds")
    add_progress_flag(p)
    p.set_defaults(func=_cli_gm_solos)
    e = datasets.add_parser("gm-solos-examples", help="write one GM-Solos clip per class (docs, app)")
    e.add_argument("out", help="folder for <label_slug>.wav")
    e.add_argument("--bank", default="timgm6mb", choices=list(BANKS))
    e.add_argument("--seed", type=int, default=12345, help="not 0, so the clips are not in the data set")
    e.set_defaults(func=_cli_examples)


#: the registration function of every data set of ``pecmae data`` (each adds its commands to the group)
DATASET_COMMANDS = (register_gm_solos,)
