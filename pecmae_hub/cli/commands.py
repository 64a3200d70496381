"""The ``pecmae`` commands: which module defines each one, and its one-line help.

``pecmae --help`` is built from this table alone; a command's module (and the libraries it needs,
torch among them) is imported only when that command runs or its own ``--help`` is asked for.
"""

from __future__ import annotations

#: command -> (module that registers it, one-line help), in the order ``pecmae --help`` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "classify": ("pecmae_hub.cli.classify", "classify audio files with a PECMAE model"),
    "sonify": ("pecmae_hub.cli.classify", "render a prototype as audio"),
    "push": ("pecmae_hub.cli.classify", "upload a model folder to the Hugging Face Hub"),
    "fidelity": (
        "pecmae_hub.cli.fidelity",
        "measure a model's fidelity record (what lets --precision auto run it fast)",
    ),
    "convert": (
        "pecmae_hub.cli.convert",
        "convert upstream checkpoints (EnCodec, EnCodecMAE, encodecmae2wav, PECMAE heads) to pecmae-hub folders",
    ),
    "extract": ("pecmae_hub.cli.extract", "encode audio tracks into per-chunk z features (.npy)"),
    "train": ("pecmae_hub.cli.train", "train a prototype head on extracted features"),
    "evaluate": (
        "pecmae_hub.cli.evaluate",
        "track-level evaluation of a prototype head (+ linear probe / MLP baselines)",
    ),
    "recipe": ("pecmae_hub.cli.recipe", "train a model end to end (gtzan, medley-solos-db, gm-solos)"),
    "data": ("pecmae_hub.cli.data", "generate data sets"),
    "app": ("pecmae_hub.cli.app", "start the web app (needs the 'app' extra)"),
}


def command_help(name: str) -> str:
    """The one-line help of ``name`` (what ``pecmae --help`` shows for it)."""
    return COMMANDS[name][1]


def add_progress_flag(parser) -> None:
    """The one progress option of every command: ``--no-progress`` (``--quiet`` is an alias), stored as
    ``no_progress``."""
    parser.add_argument(
        "--no-progress",
        "--quiet",
        dest="no_progress",
        action="store_true",
        help="hide the progress bar (--quiet is an alias)",
    )


def add_verify_flag(parser) -> None:
    """``--no-verify`` (stored as ``no_verify``): load a model whose files cannot be verified."""
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="load a model whose files cannot be verified (a folder without checksums.json, made by hand or by "
        "an old version); a warning is printed. Only for models you trust",
    )


def add_dataset_args(parser) -> None:
    """The options of an ``hf://datasets/ORG/NAME`` input (``pecmae classify`` and ``pecmae extract``)."""
    parser.add_argument("--split", help="split of an hf://datasets/ input (default: its only split)")
    parser.add_argument("--audio-column", help="audio column of an hf://datasets/ input (default: its Audio column)")
    parser.add_argument(
        "--id-column",
        help="column whose value names each row of an hf://datasets/ input in the results (default: 'id' when "
        "present, else the row index)",
    )
