"""``pecmae convert``: the command line of the checkpoint converters in ``convert`` and ``convert_head``."""

from __future__ import annotations

import argparse

from pecmae_hub.cli.commands import command_help
from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.convert.autoencoder import (
    ENCODEC_URL,
    Conversion,
    _check_out_dir,
    convert_autoencoder,
    convert_encodecmae,
)
from pecmae_hub.convert.head import convert_head
from pecmae_hub.data.split_files import parse_labels
from pecmae_hub.errors import ConfigError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.features import norm_stats_from_split

EPILOG = f"""examples:
  # the upstream autoencoder by name: downloaded from lpepino/encodecmae2wav + facebook/encodec_24khz,
  # converted once (cached in the Hugging Face cache), written to --out
  pecmae convert --from-hub encodecmae-diffusion-4s --out pecmae-ae-4s
  # diffusion autoencoder (4 s or 10 s; chunk length read from config.gin next to weights.pt)
  pecmae convert --encodec encodec_24khz-d7cc33bc.th \\
      --autoencoder DiffTransformerAE2L8L1CLS-4s/weights.pt --out pecmae-ae-4s
  # paper-era Lightning checkpoint, chunk length given explicitly
  pecmae convert --encodec encodec_24khz-d7cc33bc.th \\
      --autoencoder ae/diffusion-10s-2L8L-jamendofma-285k.ckpt --chunk-seconds 10 --out pecmae-ae-10s
  # EnCodecMAE frame encoder only
  pecmae convert --encodec encodec_24khz-d7cc33bc.th --encodecmae model.pt --size base --out encodecmae-base
  # PECMAE prototype head
  pecmae convert --head protos.ckpt --labels blues,classical,... --norm-mean M --norm-std S --out head

EnCodec weights: {ENCODEC_URL} (CC-BY-NC 4.0).
"""


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help=command_help("convert"),
        description="Convert upstream checkpoints to the pecmae-hub folder format (config.json + model.safetensors "
        "+ README.md). Pickles are read with torch.load(weights_only=True) only.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to convert (exactly one)")
    what.add_argument(
        "--autoencoder",
        metavar="PATH",
        help="encodecmae2wav weights.pt or Lightning .ckpt (full TransformerAEDiffusion state dict)",
    )
    what.add_argument("--encodecmae", metavar="PATH", help="EnCodecMAE v1 model.pt (frame encoder only)")
    what.add_argument(
        "--from-hub",
        metavar="NAME",
        help="an upstream autoencoder by name (encodecmae-diffusion-4s, encodecmae-diffusion-10s): its "
        "files are downloaded from the Hub and converted (once; later calls use the cache)",
    )
    hub = p.add_argument_group("--from-hub options")
    hub.add_argument(
        "--revision",
        action="append",
        metavar="[REPO=]REV",
        help="revision of every source repo, or REPO=REV for one of them (repeatable; default main)",
    )
    hub.add_argument("--offline", action="store_true", help="use only the local Hugging Face cache")
    hub.add_argument("--cache-dir", metavar="DIR", help="Hugging Face hub cache (default: $HF_HUB_CACHE)")
    ae = p.add_argument_group("autoencoder options")
    ae.add_argument(
        "--encodec",
        metavar="PATH",
        help=f"EnCodec 24 kHz weights: the .th from {ENCODEC_URL}, or model.safetensors of "
        "facebook/encodec_24khz (Transformers layout)",
    )
    ae.add_argument(
        "--config-gin", metavar="PATH", help="the model's config.gin (default: config.gin next to the weights, if any)"
    )
    ae.add_argument(
        "--chunk-seconds",
        type=float,
        metavar="S",
        help="chunk length of the diffusion model: 4 or 10 (read from config.gin when available)",
    )
    ae.add_argument("--size", choices=["base", "large"], help="EnCodecMAE size (checked against the tensors)")
    ae.add_argument("--frame-heads", type=int, default=12, help="frame-encoder attention heads (default %(default)s)")
    ae.add_argument("--cls-heads", type=int, default=8, help="CLS-encoder attention heads (default %(default)s)")
    ae.add_argument("--denoiser-heads", type=int, default=8, help="denoiser attention heads (default %(default)s)")
    ae.add_argument(
        "--allow-encoder-mismatch",
        action="store_true",
        help="if the EnCodec encoder embedded in the checkpoint differs from --encodec, keep the embedded one",
    )
    from pecmae_hub.cli.convert import add_head_arguments

    add_head_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    fid = p.add_argument_group("fidelity record of a converted autoencoder (what lets --precision auto run it fast)")
    fid.add_argument(
        "--held-out",
        nargs="+",
        metavar="AUDIO",
        help="held-out audio (files, folders, a list file) to measure it on (default: synthetic probes)",
    )
    fid.add_argument("--no-fidelity", action="store_true", help="write no fidelity record (auto then runs it at fp32)")
    p.set_defaults(func=run_convert)


def _print_summary(conversion: Conversion) -> None:
    for s in conversion.sources:
        print(f"read {s.role}: {s.path} ({s.container}, sha256 {s.sha256})")
    for what, count in sorted(conversion.dropped.items()):
        print(f"dropped {count} tensors: {what}")
    for note in conversion.notes:
        print(note)
    n_params = sum(p.numel() for p in conversion.model.parameters())
    print(
        f"wrote {conversion.out_dir}/ (config.json, model.safetensors, README.md): {n_params:,} parameters, "
        f"reloaded strictly"
    )


def run_convert(args: argparse.Namespace) -> int:
    chosen = [name for name in ("autoencoder", "encodecmae", "head", "from_hub") if getattr(args, name, None)]
    if len(chosen) != 1:
        raise ConfigError(
            "give exactly one of --autoencoder, --encodecmae, --head or --from-hub"
            + (f" (got {', '.join('--' + c.replace('_', '-') for c in chosen)})" if chosen else "")
        )
    kind = chosen[0]
    if kind == "from_hub":
        return _run_from_hub(args)
    if getattr(args, "revision", None) or getattr(args, "offline", False):
        raise ConfigError("--revision and --offline apply to --from-hub only")
    if kind == "head":
        _check_out_dir(args.out, args.overwrite)
        return _run_head(args)
    if not args.encodec:
        raise ConfigError(
            f"--{kind} needs --encodec PATH: the EnCodec 24 kHz weights (encodec_24khz-d7cc33bc.th, {ENCODEC_URL}) "
            "provide the decoder and are checked against the encoder copy inside the checkpoint"
        )
    if kind == "autoencoder":
        if args.size:
            raise ConfigError("--size applies to --encodecmae only")
        conversion = convert_autoencoder(
            args.autoencoder,
            args.encodec,
            args.out,
            config_gin=args.config_gin,
            chunk_seconds=args.chunk_seconds,
            frame_heads=args.frame_heads,
            cls_heads=args.cls_heads,
            denoiser_heads=args.denoiser_heads,
            allow_encoder_mismatch=args.allow_encoder_mismatch,
            overwrite=args.overwrite,
        )
    else:
        if args.config_gin:
            raise ConfigError("--config-gin applies to --autoencoder only")
        conversion = convert_encodecmae(
            args.encodecmae,
            args.encodec,
            args.out,
            size=args.size,
            heads=args.frame_heads,
            chunk_seconds=args.chunk_seconds or 4.0,
            allow_encoder_mismatch=args.allow_encoder_mismatch,
            overwrite=args.overwrite,
        )
    _print_summary(conversion)
    _write_fidelity(args, conversion.out_dir)
    return 0


def _write_fidelity(args: argparse.Namespace, folder) -> None:
    """Measure the converted autoencoder's fidelity record into ``folder`` (unless ``--no-fidelity``: then a
    record of an earlier conversion is kept only when it is about the very files written)."""
    from pecmae_hub.models.fidelity_record import reconcile_record, summary

    if folder is None:
        return
    reconcile_record(folder)
    if args.no_fidelity:
        return
    from pecmae_hub.fidelity import write_fidelity
    from pecmae_hub.models.autoencoder import Autoencoder

    ae = Autoencoder.from_pretrained(folder, precision="fp32")
    record = write_fidelity(ae, folder, args.held_out, progress=True)
    for name, entry in sorted(record["precisions"].items()):
        verdict = "passes" if entry["passed"] else "misses its bounds (" + "; ".join(entry["failures"]) + ")"
        print(f"fidelity {name}: {verdict}: {summary(entry)}")
    if not record["precisions"]:
        print("fidelity: no fast precision runs on this machine; the record holds no measurement")


def _parse_revisions(values: list[str] | None) -> str | dict[str, str] | None:
    """``--revision REV`` (every source repo) or ``--revision REPO=REV`` (repeatable) → ``materialize(revision=)``."""
    if not values:
        return None
    pairs = [v.partition("=") for v in values]
    if all(sep for _, sep, _ in pairs):
        return {repo: rev for repo, _, rev in pairs}
    if len(values) == 1:
        return values[0]
    raise ConfigError(f"--revision: give one REV for every source repo, or REPO=REV for each (got {values})")


def _run_from_hub(args: argparse.Namespace) -> int:
    import shutil

    from pecmae_hub.convert.upstream import CONVERSIONS, materialize, sources_of

    for flag in ("encodec", "config_gin", "chunk_seconds", "size"):
        if getattr(args, flag, None):
            raise ConfigError(
                f"--{flag.replace('_', '-')} does not apply to --from-hub: the named model fixes its "
                "files (EnCodec from facebook/encodec_24khz, the chunk length from its config.gin)"
            )
    out = _check_out_dir(args.out, args.overwrite)
    before = CONVERSIONS[args.from_hub]
    folder = materialize(
        args.from_hub, revision=_parse_revisions(args.revision), cache_dir=args.cache_dir, local_files_only=args.offline
    )
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            shutil.copyfile(path, out / path.name)
    how = "converted" if CONVERSIONS[args.from_hub] > before else "taken from the conversion cache"
    for repo, commit in sources_of(folder).items():
        print(f"source {repo} at commit {commit}")
    print(f"{args.from_hub}: {how} ({folder})")
    _write_fidelity(args, out)
    print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


def _run_head(args: argparse.Namespace) -> int:
    from pecmae_hub.cli.convert import convert_head_from_args

    convert_head_from_args(args)
    return 0


def add_head_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--head`` conversion flags (``--out`` is expected from the caller's parser)."""
    g = parser.add_argument_group("prototype head (upstream PrototypeNet checkpoint)")
    g.add_argument("--head", metavar="CKPT", help="upstream PrototypeNet Lightning checkpoint (.ckpt)")
    g.add_argument("--labels", help="class names in upstream id order: a,b,c or a file with one per line")
    g.add_argument("--norm-mean", type=float, help="training ds_mean (scalar) of the features")
    g.add_argument("--norm-std", type=float, help="training ds_std (scalar) of the features")
    g.add_argument("--norm-from-features", metavar="DIR", help="compute mean/std from the .npy features in DIR ...")
    g.add_argument("--norm-split", metavar="TSV", help="... of the training split TSV (label<TAB>relpath)")
    g.add_argument("--protos-per-class", type=int, help="check K against the checkpoint")
    g.add_argument("--summarizer", choices=["transformer", "none"], help="check the summariser against the checkpoint")
    g.add_argument("--distance", choices=["l2", "l1"], default="l2", help="upstream --proto-loss (default l2)")
    g.add_argument("--autoencoder-repo", help="Hub repo id (or folder) of the autoencoder the features came from")
    g.add_argument("--autoencoder-revision", help="its revision")


def convert_head_from_args(args: argparse.Namespace) -> PrototypeHead:
    """Run :func:`convert_head` from the flags of :func:`add_head_arguments` plus ``args.out``."""
    if not args.labels:
        raise ConfigError("--head needs --labels (the class names in the checkpoint's id order)")
    if args.norm_from_features:
        if not args.norm_split:
            raise ConfigError("--norm-from-features needs --norm-split TSV (the training split)")
        mean, std = norm_stats_from_split(args.norm_from_features, args.norm_split)
    elif args.norm_mean is None or args.norm_std is None:
        raise ConfigError(
            "--head needs the training normalisation statistics: --norm-mean M --norm-std S, or "
            "--norm-from-features DIR --norm-split TRAIN.tsv to recompute them"
        )
    else:
        mean, std = args.norm_mean, args.norm_std
    ae = AutoencoderRef(repo_id=args.autoencoder_repo, revision=args.autoencoder_revision)
    head = convert_head(
        args.head,
        parse_labels(args.labels),
        mean,
        std,
        args.out,
        args.protos_per_class,
        args.summarizer,
        args.distance,
        ae,
    )
    print(
        f"converted {args.head}: {head.num_classes} classes x {head.protos_per_class} prototypes, "
        f"D={head.embedding_dim}, summarizer={head.config.summarizer}, norm mean={mean:.6g} std={std:.6g} "
        f"-> {args.out}"
    )
    return head
