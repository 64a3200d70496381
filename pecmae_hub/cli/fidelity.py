"""``pecmae fidelity``: measure a model folder's fidelity record (``fidelity.json``) and say what ``auto`` runs.

The record is what lets ``precision="auto"`` run a model in its fast mode (int8 on a CPU, bf16/fp16 on CUDA):
see :mod:`pecmae_hub.fidelity` (what is measured) and :mod:`pecmae_hub.models.fidelity_record` (the bounds).
Recipes, ``pecmae convert`` and ``pecmae push`` write one; this command (re)measures it for any folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pecmae_hub.cli.commands import add_progress_flag, add_verify_flag, command_help
from pecmae_hub.errors import ConfigError, ModelNotFoundError

EPILOG = """examples:
  # the embedded model, on the held-out TimGM6mb bank of GM-Solos
  pecmae fidelity checkpoints/gm-solos --held-out data/gm-solos/timgm6mb
  # a converted autoencoder folder, on synthetic probes (no audio given)
  pecmae fidelity pecmae-ae-4s
exit status: 0 the record was written (whether or not a fast mode passed), 1 error, 2 bad command line"""


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "fidelity",
        help=command_help("fidelity"),
        description="Measure the fast precisions of a model (or autoencoder) folder against fp32 on held-out audio "
        "and write fidelity.json (listed in checksums.json): the record that lets --precision auto run it fast.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", help="a model folder (head + autoencoder) or an autoencoder folder")
    p.add_argument(
        "--held-out",
        nargs="+",
        metavar="AUDIO",
        help="held-out audio: files, folders or a list file (default: synthetic probes, recorded as such)",
    )
    p.add_argument("--ood", nargs="+", metavar="AUDIO", help="more out-of-domain audio (probes always count)")
    p.add_argument(
        "--precisions",
        help="comma-separated fast modes to measure (default: all this device runs: int8, and bf16 where native)",
    )
    p.add_argument("--max-clips", type=int, default=64, help="held-out clips used, spread evenly (default %(default)s)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="each clip cut to this (default %(default)g)")
    p.add_argument("--max-items", type=int, help="prototypes to sonify (default: all; an autoencoder alone: 2)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's on-the-fly sonify default)")
    p.add_argument("--scheduler", help="sampler (default: the model's on-the-fly sonify default)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    add_progress_flag(p)
    add_verify_flag(p)
    p.set_defaults(func=run_fidelity)


def _kind(folder: Path) -> str:
    config = folder / "config.json"
    if not config.is_file():
        raise ModelNotFoundError(f"{folder} is not a model folder (no config.json)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"{config} is not a pecmae-hub config: {exc}") from None
    kinds = {"pecmae-prototype-head": "model", "pecmae-autoencoder": "autoencoder"}
    if model_type not in kinds:
        raise ConfigError(f"{folder} holds a {model_type!r}, not a PECMAE model or an autoencoder")
    return kinds[model_type]


def run_fidelity(args: argparse.Namespace) -> int:
    from pecmae_hub.devices import resolve_device
    from pecmae_hub.fidelity import measure_fidelity, store_record
    from pecmae_hub.models.fidelity_record import summary

    folder = Path(args.folder)
    kind = _kind(folder)
    device = str(resolve_device(args.device))
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()] if args.precisions else None
    if kind == "model":
        from pecmae_hub.pipeline import PECMAE

        model = PECMAE.from_pretrained(folder, device=device, precision="fp32", verify=not args.no_verify)
    else:
        from pecmae_hub.models.autoencoder import Autoencoder

        model = Autoencoder.from_pretrained(folder, device=device, precision="fp32", verify=not args.no_verify)
    record = measure_fidelity(
        model,
        args.held_out,
        ood=args.ood,
        precisions=precisions,
        max_clips=args.max_clips,
        max_seconds=args.max_seconds,
        max_items=args.max_items,
        steps=args.steps,
        scheduler=args.scheduler,
        progress=not args.no_progress,
    )
    record = store_record(record, folder)
    held = record["held_out"]
    print(f"wrote {folder / 'fidelity.json'}: {held['clips']} held-out clips ({held['source']})")
    for name, entry in sorted(record["precisions"].items()):
        verdict = "passes" if entry.get("passed") else "misses its bounds: " + "; ".join(entry.get("failures", []))
        print(f"  {name}: {verdict}\n    {summary(entry)}")
    _say_auto(folder, kind, device, not args.no_verify)
    return 0


def _say_auto(folder: Path, kind: str, device: str, verify: bool) -> None:
    """What ``--precision auto`` now runs this folder at, here (loaded again, as a user would)."""
    if kind == "model":
        from pecmae_hub.pipeline import PECMAE

        loaded = PECMAE.from_pretrained(folder, device=device, verify=verify)
        precision, reason = loaded.precision, loaded.precision_reason
    else:
        from pecmae_hub.models.autoencoder import Autoencoder

        ae = Autoencoder.from_pretrained(folder, device=device, verify=verify)
        precision, reason = ae.precision, ae.precision_reason
    print(f"precision auto runs it at {precision} on this {device.split(':')[0].upper()}: {reason}", file=sys.stdout)
