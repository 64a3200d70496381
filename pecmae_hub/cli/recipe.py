"""`pecmae recipe ...`: train a model end to end."""
from __future__ import annotations

from pecmae_hub.cli.commands import command_help

import sys

from pecmae_hub.errors import IncompleteRunError
from pecmae_hub.recipes.gm_solos import STAGES, RecipeConfig, run_recipe


def _run_cli(args) -> int:
    cfg = RecipeConfig(work=args.work, data=args.data, n_per_class=args.n_per_class, n_test_per_class=args.n_test_per_class,
                       val_from=args.val_from, seed=args.seed, ae_steps=args.ae_steps, ae_batch_size=args.ae_batch_size,
                       label_weight=args.label_weight, ae_time_budget_s=args.ae_time_budget,
                       head_steps=args.head_steps, protos_per_class=args.protos_per_class,
                       sonify_steps=args.sonify_steps, out=args.out, ae_init=args.ae_init)
    try:
        run_recipe(cfg, args.stage or None)
    except IncompleteRunError as exc:
        print(f"pecmae recipe: {exc}", file=sys.stderr)
        return 3  # distinct from errors (1): the run is healthy and resumable, a wrapper may simply rerun it
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("recipe", help=command_help("recipe"))
    parser.add_argument("name", choices=["gm-solos"], help="the recipe to run")
    parser.add_argument("--work", default="runs/gm-solos", help="working folder (resumable)")
    parser.add_argument("--data", default=None, help="already rendered GM-Solos folder (default: WORK/data)")
    parser.add_argument("--stage", action="append", choices=STAGES, help="run only these stages (repeatable)")
    parser.add_argument("--n-per-class", type=int, default=220)
    parser.add_argument("--n-test-per-class", type=int, default=60)
    parser.add_argument("--val-from", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ae-steps", type=int, default=4000)
    parser.add_argument("--ae-batch-size", type=int, default=32)
    parser.add_argument("--label-weight", type=float, default=1.0,
                        help="weight of the supervised contrastive term in autoencoder training (0: no labels)")
    parser.add_argument("--ae-time-budget", type=float, default=None,
                        help="seconds; stop (resumable, exit code 3) when spent")
    parser.add_argument("--ae-init", default=None, help="warm-start the autoencoder from this model folder")
    parser.add_argument("--head-steps", type=int, default=3000)
    parser.add_argument("--protos-per-class", type=int, default=3)
    parser.add_argument("--sonify-steps", type=int, default=40)
    parser.add_argument("--out", default="checkpoints/gm-solos", help="where the finished model folder goes")
    parser.set_defaults(func=_run_cli)
