"""`pecmae evaluate`: track-level metrics of a trained head."""

from __future__ import annotations

from pathlib import Path

from pecmae_hub.cli.commands import add_verify_flag, command_help
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.training.evaluation import evaluate_head, format_report
from pecmae_hub.training.features import load_features


def _run_cli(args) -> int:
    from pecmae_hub.extras import require_extra

    require_extra("train", "pecmae evaluate")
    head = PrototypeHead.from_pretrained(args.model, revision=args.revision, verify=not args.no_verify)
    test_set = load_features(args.features, args.split, label_names=head.labels)
    train_set = None
    if args.train_split:
        train_set = load_features(args.train_features or args.features, args.train_split, label_names=head.labels)
    result = evaluate_head(head, test_set, train_set, args.out, mlp_steps=args.mlp_steps, seed=args.seed)
    if test_set.missing:
        print(f"skipped {len(test_set.missing)} missing feature files (first: {', '.join(test_set.missing[:5])})")
    print(format_report(result))
    if args.out:
        print(f"wrote {Path(args.out) / 'evaluation.json'} and confusion_matrix.png")
    return 0


def register_cli(subparsers) -> None:
    """Add ``pecmae evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help=command_help("evaluate"),
        description="Track-level accuracy, macro-F1, per-class metrics and confusion matrix of "
        "a prototype head; with --train-split also a linear probe and the MLP baseline "
        "on the same embeddings, and the retention (prototype / baseline accuracy).",
    )
    p.add_argument("--model", required=True, help="head folder or Hub repo id")
    p.add_argument("--revision", help="Hub revision of --model")
    add_verify_flag(p)
    p.add_argument("--features", required=True, help="folder of .npy features (pecmae extract output)")
    p.add_argument("--split", required=True, help="TSV of the evaluated tracks: label<TAB>relative/path")
    p.add_argument("--train-split", help="training split TSV: also fit the linear probe and MLP baselines")
    p.add_argument("--train-features", help="features folder of --train-split (default: --features)")
    p.add_argument(
        "--mlp-steps", type=int, default=2000, help="MLP baseline steps at batch 32 (0 disables; default 2000)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write evaluation.json and confusion_matrix.png here")
    p.set_defaults(func=_run_cli)
