"""`pecmae recipe ...`: train a model end to end.

- ``pecmae recipe gm-solos``: the embedded default model (``pecmae_hub.recipes.gm_solos``);
- ``pecmae recipe gtzan`` / ``pecmae recipe medley-solos-db``: the paper's protocol, from data to a
  Hub-ready (optionally published) model (``pecmae_hub.recipes.paper``).

Recipe modules (and torch) are imported only when a recipe runs. A failing paper-recipe stage raises
``RecipeStageError`` (a ``PecmaeError``): ``pecmae`` prints it (stage, cause, resume command) and exits 1.
"""

from __future__ import annotations

import sys

from pecmae_hub.cli.commands import add_progress_flag, command_help
from pecmae_hub.errors import ConfigError, IncompleteRunError


def run_recipe(cfg, stages):
    """Run the gm-solos recipe (a module-level name, so that tests can replace it)."""
    from pecmae_hub.recipes.gm_solos import run_recipe as run

    return run(cfg, stages)


def _run_gm_solos(args) -> int:
    from pecmae_hub.extras import require_extra

    require_extra("train", "pecmae recipe")
    from pecmae_hub.distributed import distributed

    if distributed():
        raise ConfigError(
            "the gm-solos recipe runs in one process (its autoencoder training is not data-parallel): run it "
            "without accelerate launch; the paper recipes (gtzan, medley-solos-db) and extract/train/classify scale out"
        )
    from pecmae_hub.recipes.gm_solos import STAGES, RecipeConfig

    bad = [s for s in args.stage or [] if s not in STAGES]
    if bad:
        raise ConfigError(f"--stage {bad[0]!r}: not a gm-solos stage; stages: {', '.join(STAGES)}")
    cfg = RecipeConfig(
        work=args.work or "runs/gm-solos",
        data=args.data,
        n_per_class=args.n_per_class,
        n_test_per_class=args.n_test_per_class,
        val_from=args.val_from,
        seed=args.seed,
        ae_steps=args.ae_steps,
        ae_batch_size=args.ae_batch_size,
        label_weight=args.label_weight,
        ae_time_budget_s=args.ae_time_budget,
        head_steps=args.head_steps,
        protos_per_class=args.protos_per_class,
        **{
            name: value
            for name in ("sonify_steps", "sonify_scheduler", "sonify_guidance", "sonify_temperature")
            if (value := getattr(args, name)) is not None  # None: the recipe's own default
        },
        out=args.out,
        ae_init=args.ae_init,
        vocoder_steps=args.vocoder_steps,
        decoder_steps=args.decoder_steps,
        time_budget_s=args.time_budget,
        from_model=args.from_model,
    )
    try:
        run_recipe(cfg, args.stage or None)
    except IncompleteRunError as exc:
        print(f"pecmae recipe: {exc}", file=sys.stderr)
        return 3  # distinct from errors (1): the run is healthy and resumable, a wrapper may simply rerun it
    return 0


def _run_paper(args) -> int:
    from pecmae_hub.extras import require_extra

    require_extra("train", "pecmae recipe")
    from pecmae_hub.recipes.paper import STAGES, PaperRecipeConfig, run_paper_recipe

    bad = [s for s in (args.stage or []) + (args.redo or []) if s not in STAGES]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not a stage of the recipe; stages: {', '.join(STAGES)}")
    cfg = PaperRecipeConfig(
        dataset=args.name,
        data=args.data,
        work=args.work or f"runs/{args.name}",
        autoencoder=args.autoencoder,
        autoencoder_revision=args.autoencoder_revision,
        protos_per_class=args.protos_per_class,
        steps=args.steps,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        baseline_steps=args.baseline_steps,
        render_steps=args.render_steps,
        push=args.push,
        bundle_autoencoder=args.bundle_autoencoder,
        autoencoder_repo=args.autoencoder_repo,
        private=args.private,
        redo=tuple(args.redo or ()),
        progress=not args.no_progress,
    )
    run_paper_recipe(cfg, args.stage or None)
    return 0


def _gm_solos_parser(sub) -> None:
    p = sub.add_parser("gm-solos", help="the embedded default model (synthetic GM-Solos, trained from scratch)")
    p.add_argument("--work", default=None, help="working folder (resumable; default runs/gm-solos)")
    p.add_argument("--data", default=None, help="already rendered GM-Solos folder (default: WORK/data)")
    p.add_argument("--stage", action="append", help="run only these stages (repeatable)")
    p.add_argument("--n-per-class", type=int, default=220)
    p.add_argument("--n-test-per-class", type=int, default=60)
    p.add_argument("--val-from", type=int, default=180)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ae-steps", type=int, default=4000)
    p.add_argument("--ae-batch-size", type=int, default=32)
    p.add_argument(
        "--label-weight",
        type=float,
        default=1.0,
        help="weight of the supervised contrastive term in autoencoder training (0: no labels)",
    )
    p.add_argument(
        "--ae-time-budget", type=float, default=None, help="seconds; stop (resumable, exit code 3) when spent"
    )
    p.add_argument("--ae-init", default=None, help="warm-start the autoencoder from this model folder")
    p.add_argument("--head-steps", type=int, default=3000)
    p.add_argument("--protos-per-class", type=int, default=3)
    p.add_argument("--vocoder-steps", type=int, default=6500, help="neural vocoder training steps (vocoder stage)")
    p.add_argument(
        "--decoder-steps",
        type=int,
        default=6000,
        help="diffusion decoder training steps, encoder frozen (decoder stage)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds for the vocoder and decoder stages; stop (resumable, exit code 3) when spent",
    )
    p.add_argument(
        "--from-model",
        default=None,
        metavar="FOLDER",
        help="start from a finished model (its autoencoder and head), e.g. checkpoints/gm-solos, and run the "
        "vocoder, decoder and package stages on it",
    )
    p.add_argument("--sonify-steps", type=int, default=None, help="package: diffusion steps per prototype render")
    p.add_argument("--sonify-scheduler", default=None, help="package: the renders' sampler (unipc, upstream, ...)")
    p.add_argument("--sonify-guidance", type=float, default=None, help="package: the renders' guidance weight w")
    p.add_argument("--sonify-temperature", type=float, default=None, help="package: the renders' starting-noise scale")
    p.add_argument("--out", default="checkpoints/gm-solos", help="where the finished model folder goes")
    p.set_defaults(func=_run_gm_solos)


def _paper_parser(sub, name: str, data_help: str, k: int) -> None:
    p = sub.add_parser(
        name,
        help=f"the paper's {name} model: data -> extract -> train -> evaluate -> render -> card [-> push]",
        description=f"Train the paper's {name} model (K = {k} by default) from data to a Hub-ready folder WORK/model; "
        "every stage is resumable (a rerun skips finished stages). Several processes, GPUs or machines share "
        f"extraction and training: accelerate launch -m pecmae_hub.cli recipe {name} ... (docs/scale.md)",
    )
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--work", default=None, help=f"working folder (resumable; default runs/{name})")
    p.add_argument(
        "--autoencoder",
        default="encodecmae-diffusion-4s",
        help="upstream name, converted autoencoder folder, or Hub repo id org/name (default %(default)s)",
    )
    p.add_argument("--autoencoder-revision", help="branch, tag or commit of a Hub --autoencoder")
    p.add_argument(
        "--protos-per-class", type=int, default=None, help=f"prototypes per class K (default: the paper's {k})"
    )
    p.add_argument("--steps", type=int, default=None, help="head training steps (default: the paper's 150000)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=32, help="chunks per forward pass when extracting (default 32)")
    p.add_argument("--num-workers", type=int, default=0, help="audio decoding worker processes (default 0)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--baseline-steps", type=int, default=2000, help="MLP baseline training steps (default 2000)")
    p.add_argument("--render-steps", type=int, default=40, help="diffusion steps per rendered prototype (default 40)")
    p.add_argument(
        "--push",
        metavar="ORG/NAME",
        help=f"publish the model there (the short name {name!r} looks for "
        f"ORG/{name}-pecmae-{k} with PECMAE_HUB_ORG=ORG)",
    )
    p.add_argument(
        "--bundle-autoencoder",
        action="store_true",
        help="put the autoencoder inside the model repo (its licence notes go into the card) instead of "
        "referencing an autoencoder repo",
    )
    p.add_argument(
        "--autoencoder-repo",
        metavar="ORG/NAME",
        help="where --push uploads a local autoencoder to reference it (default ORG/<its name>)",
    )
    p.add_argument("--private", action="store_true", help="create the pushed repos as private")
    p.add_argument("--stage", action="append", help="run only these stages (repeatable)")
    p.add_argument(
        "--redo",
        action="append",
        metavar="STAGE",
        help="run this stage and every later one again, even if finished (repeatable)",
    )
    add_progress_flag(p)
    p.set_defaults(func=_run_paper)


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "recipe", help=command_help("recipe"), description="Train a model end to end; each recipe is resumable."
    )
    sub = parser.add_subparsers(dest="name", metavar="RECIPE", required=True)
    _gm_solos_parser(sub)
    _paper_parser(
        sub,
        "gtzan",
        "a GTZAN folder (genres/, genres_original/ layouts), a genres.tar.gz, or 'hub' "
        "(the marsyas/gtzan dataset repo, unpacked once into WORK/data)",
        5,
    )
    _paper_parser(sub, "medley-solos-db", "the Medley-Solos-DB folder holding the audio and its metadata CSV", 20)
