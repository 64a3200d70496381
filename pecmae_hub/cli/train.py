"""`pecmae train`: train a prototype head on extracted features."""

from __future__ import annotations

import json
from pathlib import Path

from pecmae_hub.cli.commands import add_progress_flag, command_help
from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.errors import ConfigError
from pecmae_hub.storage.integrity import write_checksums
from pecmae_hub.storage.pretrained import copy_model_folder
from pecmae_hub.training.head import PRESETS, TrainConfig, train_head


def _run_cli(args) -> int:
    from pecmae_hub.extras import require_extra

    require_extra("train", "pecmae train")
    from pecmae_hub.data.split_files import read_tsv
    from pecmae_hub.training.features import load_features, resolve_labels

    splits = {"train": args.split_train, "val": args.split_val, "test": args.split_test}
    if args.dataset_spec:
        from pecmae_hub.data.splits import load_dataset_splits

        kind, sep, root = args.dataset_spec.partition(":")
        if not sep or not root:
            raise ConfigError(f"--dataset-spec must be KIND:ROOT (e.g. gtzan:/data/gtzan), got {args.dataset_spec!r}")
        ds = load_dataset_splits(kind, root)
        labels = resolve_labels(args.labels or list(ds.labels))
        splits = {name: splits[name] or ds.split(name) or None for name in splits}
    elif not args.split_train:
        raise ConfigError(
            "pecmae train needs --split-train TSV (and usually --split-val TSV), or --dataset-spec KIND:ROOT"
        )
    else:
        labels = resolve_labels(args.labels, args.features, read_tsv(args.split_train))
    sets = {
        name: load_features(args.features, split, label_names=labels) if split else None
        for name, split in splits.items()
    }
    from pecmae_hub.distributed import processes

    main = processes().is_main_process  # under accelerate launch the main process writes and reports
    for name, fs in sets.items():
        if main and fs is not None and fs.missing:
            print(f"{name}: skipped {len(fs.missing)} missing feature files (first: {', '.join(fs.missing[:5])})")
    ae, bundle = _autoencoder_from_manifest(args.features)
    if args.autoencoder_repo:
        ae, bundle = (
            AutoencoderRef(
                repo_id=args.autoencoder_repo, revision=args.autoencoder_revision, fingerprint=ae.fingerprint
            ),
            None,
        )
    cfg = TrainConfig.from_preset(
        args.preset,
        protos_per_class=args.protos_per_class,
        alpha=args.alpha,
        temperature=args.temperature,
        batch_size=args.batch_size,
        max_lr=args.max_lr,
        weight_decay=args.weight_decay,
        total_steps=args.total_steps,
        eval_every=args.eval_every,
        summarizer=args.summarizer,
        distance=args.distance,
        proto_loss_samples=args.proto_loss_samples,
        init=args.init,
        seed=args.seed,
        device=args.device,
        mixed_precision=False if args.no_amp else None,
        nearest_k=args.nearest_k,
        threads=args.threads,
        autoencoder=ae,
    )
    _, metrics = train_head(sets["train"], sets["val"], sets["test"], cfg, args.out, progress=not args.no_progress)
    if not main:
        return 0
    if bundle is not None:
        copy_model_folder(bundle, Path(args.out) / "autoencoder")
        write_checksums(args.out)  # the head folder's checksums.json lists the bundled autoencoder too
    for name in ("val", "test"):
        if metrics[name]:
            print(
                f"{name}: track accuracy {metrics[name]['accuracy']:.4f}, macro-F1 {metrics[name]['macro_f1']:.4f} "
                f"({metrics[name]['n_tracks']} tracks)"
            )
    print(f"best step {metrics['best_step']} of {metrics['steps']}; head written to {args.out}")
    return 0


def _autoencoder_from_manifest(features_dir) -> tuple[AutoencoderRef, Path | None]:
    """The reference a head trained on these features gets, and the local autoencoder folder to bundle.

    A Hub autoencoder is referenced by repo and revision; a local one is copied into the head folder
    (``autoencoder/``), so the trained head is a complete model that never points outside itself.
    """
    path = Path(features_dir) / "extract_manifest.json"
    if not path.is_file():
        return AutoencoderRef(), None
    ae = json.loads(path.read_text()).get("autoencoder", {})
    fingerprint = ae.get("fingerprint", ae.get("config_hash"))
    folder = ae.get("folder") or ae.get("path")
    if ae.get("name"):  # an upstream autoencoder: users get it from its authors' repos
        return AutoencoderRef(name=ae["name"], sources=ae.get("sources"), fingerprint=fingerprint), None
    if folder:
        return AutoencoderRef(path="autoencoder", fingerprint=fingerprint), Path(folder)
    return AutoencoderRef(repo_id=ae.get("repo_id"), revision=ae.get("revision"), fingerprint=fingerprint), None


def register_cli(subparsers) -> None:
    """Add ``pecmae train``; unset flags keep the preset's (or the paper's) values."""
    p = subparsers.add_parser(
        "train",
        help=command_help("train"),
        description="Train a PECMAE prototype head on features written by 'pecmae extract'. Loss: alpha*L_p + "
        "(1-alpha)*CE(logits/temperature); Adam + OneCycleLR; model selection on validation track accuracy. "
        "Several processes, GPUs or machines (data parallel, same global batch): accelerate launch -m "
        "pecmae_hub.cli train ... (docs/scale.md).",
    )
    p.add_argument("--features", required=True, help="folder of .npy features (pecmae extract output)")
    p.add_argument("--split-train", help="training split TSV: label<TAB>relative/path")
    p.add_argument("--split-val", help="validation split TSV (model selection)")
    p.add_argument("--split-test", help="test split TSV (reported in metrics.json)")
    p.add_argument(
        "--dataset-spec",
        metavar="KIND:ROOT",
        help="splits from pecmae_hub.datasets instead of TSVs, e.g. gtzan:/data/gtzan "
        "(kinds: gtzan, medley-solos-db, tsv, folders)",
    )
    p.add_argument(
        "--labels",
        help="class names in id order: a,b,c or a file (default: labels.txt in --features, "
        "else first-seen order of --split-train)",
    )
    p.add_argument("--out", required=True, help="output folder (the Hub-ready head)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="the paper's runs; any flag below overrides it")
    p.add_argument("--protos-per-class", type=int, help="K (gtzan 5, medley-solos-db 20)")
    p.add_argument("--alpha", type=float, help="weight of the prototype loss (0.75)")
    p.add_argument("--temperature", type=float, help="CE temperature (0.1)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="global batch size: under accelerate launch every process computes a slice of each batch (256)",
    )
    p.add_argument("--max-lr", type=float, help="OneCycle max LR (1e-3)")
    p.add_argument("--weight-decay", type=float, help="Adam weight decay (1e-4)")
    p.add_argument("--total-steps", type=int, help="optimisation steps (150000)")
    p.add_argument("--eval-every", type=int, help="validate every N steps (1000)")
    p.add_argument("--summarizer", choices=["transformer", "none"])
    p.add_argument("--distance", choices=["l2", "l1"])
    p.add_argument("--proto-loss-samples", choices=["class", "all"])
    p.add_argument("--init", choices=["kmeans-centers", "kmeans-samples", "random"])
    p.add_argument("--seed", type=int, help="random seed (42)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when available")
    p.add_argument("--no-amp", action="store_true", help="disable fp16 AMP on CUDA")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads while training (default: torch's setting; 1 is often fastest on a small, busy CPU)",
    )
    p.add_argument("--nearest-k", type=int, help="training chunks listed per prototype in nearest.json (5)")
    p.add_argument(
        "--autoencoder-repo",
        help="autoencoder repo id recorded in the head config (default: from extract_manifest.json of --features)",
    )
    p.add_argument("--autoencoder-revision")
    add_progress_flag(p)
    p.set_defaults(func=_run_cli)
