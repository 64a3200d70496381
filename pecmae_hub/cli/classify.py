"""``pecmae classify``, ``pecmae sonify`` and ``pecmae push``: argument parsing over the library.

``classify`` writes one row per input to ``--out`` (CSV or JSONL, resumable, locked, repaired and
checked against the model by :mod:`pecmae_hub.batch.results`), or streams JSONL to standard output
with ``--out -``; without ``--out`` it prints a short table on a terminal (:mod:`pecmae_hub.cli.table`)
and JSONL into a pipe. Every argument is checked, and typed errors raised, before any work: a path that
does not exist is a usage error (exit status 1), not a failed input.
"""

from __future__ import annotations

import argparse
import sys

from pecmae_hub.audio import MAX_SECONDS
from pecmae_hub.cli.commands import add_dataset_args, add_progress_flag, add_verify_flag, command_help
from pecmae_hub.errors import ConfigError, DatasetError, ModelNotFoundError, ProcessGroupError
from pecmae_hub.hub.registry import DEFAULT_MODEL, known_names

#: exit status of ``pecmae classify`` when at least one input failed (its row holds the error)
EXIT_SOME_FAILED = 3
EXAMPLES = """examples:
  pecmae classify examples/                          a table on the terminal (JSONL when piped)
  pecmae classify music/ --out preds.csv             a CSV; rerun to resume or retry the failed files
  pecmae classify a.wav b.mp3 --model gtzan --out -  JSONL on standard output"""
EXIT_CODES = """exit status:
  0    every input has a result
  1    error before any work (a path that does not exist, bad option, model, device, --out
       locked/unwritable/of another model), or --out cannot be written any more (a full disk: the
       rows so far are kept; rerun to continue)
  2    bad command line
  3    some inputs failed: their rows hold the error (they are retried on the next run)
  130  interrupted (rows written so far are kept; rerun to finish)"""


def _check_common(args: argparse.Namespace) -> None:
    """Model name and device, checked before any input is read (typed errors, exit status 1)."""
    from pecmae_hub.devices import resolve_device
    from pecmae_hub.hub.registry import resolve_model

    resolve_model(args.model, args.revision)  # an empty or unknown name
    resolve_device(args.device)  # e.g. cuda on a CPU-only PyTorch


def _check_paths_exist(paths: list[str]) -> None:
    """Every path given on the command line exists (a typo is a usage error, not a failed input)."""
    import os

    from pecmae_hub.dataset_source import is_dataset_uri

    missing = [p for p in paths if not is_dataset_uri(p) and not os.path.lexists(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"no such file or folder: {shown} (give audio files, folders or one list file)")


def run_classify(args: argparse.Namespace) -> int:
    from pecmae_hub.batch.results import STDOUT, StreamResults, model_fingerprint, output_format
    from pecmae_hub.batch.shards import open_results
    from pecmae_hub.dataset_source import open_source

    table = args.out is None and sys.stdout.isatty()  # a person reads it: a table, not JSON
    out = args.out or STDOUT
    fmt = output_format(out)
    if args.top_k < 0:
        raise ConfigError(f"--top-k must be 0 or more, got {args.top_k}")
    if not args.max_seconds > 0:
        raise ConfigError(f"--max-seconds must be positive, got {args.max_seconds}")
    _check_paths_exist(args.paths)
    _check_common(args)
    # files: folders expanded, one file under several spellings once (a list file's missing entries get an
    # error row); hf://datasets/...: the rows' ids (or indices), read from the id column alone
    source = open_source(args.paths, split=args.split, audio_column=args.audio_column, id_column=args.id_column)
    inputs = source.input_keys()
    results = open_results(out, keep_errors=args.keep_errors, key=source.key)  # several processes: shard files
    if table and isinstance(results, StreamResults):  # one process writing to a person: a table, not JSON
        from pecmae_hub.cli.table import TableResults

        results = TableResults(sys.stdout)
    main = getattr(results, "is_main", True)  # under accelerate launch only rank 0 reports
    out_of_domain = 0
    with results:  # a file --out is locked from here on: a second run on it fails now
        for note in results.repairs:
            print(f"pecmae classify: repaired {out}: {note}", file=sys.stderr)
        todo = results.pending(inputs)
        if todo and main and not args.no_progress:  # the first decode warms up: say what happens meanwhile
            print(f"pecmae classify: loading model {args.model}…", file=sys.stderr, flush=True)
        model = _load_model(args)
        results.begin(model.name, model_fingerprint(model), model.labels, args.top_k)  # refuses another model
        if main:
            print(_fit(f"pecmae classify: {precision_words(model)}"), file=sys.stderr)
        from tqdm.auto import tqdm

        mine, count = source.share(todo)  # this process's share (all of it in a plain run)
        bar = tqdm(
            mine, total=count, desc="classifying", unit="file", disable=args.no_progress or not main, file=sys.stderr
        )
        for path, audio in bar:
            try:
                if isinstance(audio, Exception):  # a dataset row without readable audio
                    raise audio
                prediction, error = model.classify(audio, top_k=args.top_k, max_seconds=args.max_seconds), ""
                out_of_domain += prediction.in_domain is False
            except ProcessGroupError:  # another process failed or was lost (seen at a check-in): stop
                raise
            except Exception as exc:  # one bad file must not stop the batch
                prediction, error = None, f"{type(exc).__name__}: {exc}"
            results.write(path, prediction, error)  # a full disk: one OutputError, the rows so far are kept
        failed = results.failed(inputs)
    if not main:
        return EXIT_SOME_FAILED if failed else 0
    where = "the table above" if table else "standard output" if fmt == "stdout" else out
    if not todo:
        print(f"pecmae classify: nothing to do, all {len(inputs)} inputs are already in {out}", file=sys.stderr)
    else:
        now = set(todo)
        failed_now = sum(1 for p, _ in failed if p in now)
        kept = f", {len(failed) - failed_now} earlier failures kept (--keep-errors)" if len(failed) > failed_now else ""
        skipped = "" if fmt == "stdout" else f"{len(inputs) - len(todo)} skipped (already in {where}), "
        guesses = f"; {out_of_domain} out of domain: labels are guesses" if out_of_domain else ""
        print(
            f"pecmae classify: {len(todo) - failed_now} classified, {skipped}{failed_now} failed{kept}{guesses}",
            file=sys.stderr,
        )
    for path, error in failed[:20]:
        print(f"  failed: {path}: {error}", file=sys.stderr)
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more (see the error column of {where})", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def run_sonify(args: argparse.Namespace) -> int:
    from pecmae_hub.audio import SAMPLE_RATE, output_audio_format, write_audio
    from pecmae_hub.batch.results import check_output_file
    from pecmae_hub.models.synthesis import resolve_vocoder
    from pecmae_hub.prototype_audio import check_render_settings
    from pecmae_hub.storage.atomic import atomic_path

    if args.steps is not None:  # typos fail before the model loads; defaults are resolved with the model
        check_render_settings(args.steps, args.guidance, args.seed, args.scheduler or "upstream")
    output_audio_format(args.out)  # a format soundfile cannot write fails now, not after decoding
    check_output_file(args.out)
    _check_common(args)
    model = _load_model(args)
    p = model.prototype_index(args.prototype)
    label, k = model.head.prototype_name(p)
    steps, scheduler = model.render_settings_for(args.steps, args.scheduler)
    steps, guidance, seed = check_render_settings(steps, args.guidance, args.seed, scheduler)
    temperature = model.default_temperature() if args.temperature is None else args.temperature
    rendered = model.prototype_audio_path(p, steps, guidance, seed, scheduler, args.vocoder, temperature=temperature)
    rendered = rendered is not None
    from tqdm.auto import tqdm

    # one tick per diffusion step (a pre-rendered prototype needs none); hidden when stderr is not a terminal
    with tqdm(
        total=steps, desc=f"decoding {label}:{k}", unit="step", file=sys.stderr, disable=True if rendered else None
    ) as bar:
        wav = model.sonify(
            p,
            steps=steps,
            guidance=guidance,
            seed=seed,
            scheduler=scheduler,
            vocoder=args.vocoder,
            temperature=temperature,
            progress=lambda i, n: bar.update(i - bar.n),
        )
    with atomic_path(args.out) as tmp:
        write_audio(tmp, wav)
    name = scheduler if isinstance(scheduler, str) else scheduler.get("name")
    made_at = (model.render_settings or {}).get("precision", "fp32") if rendered else model.precision
    print(
        f"wrote {args.out}: prototype {p} ({label}:{k}), {len(wav) / SAMPLE_RATE:.2f} s, "
        f"{'pre-rendered' if rendered else 'decoded'} ({name}, {steps} steps, "
        f"{resolve_vocoder(model.autoencoder, args.vocoder)} vocoder, {made_at})"
    )
    if not rendered:
        print(_fit(f"pecmae sonify: {precision_words(model)}"), file=sys.stderr)
    return 0


def run_push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pecmae_hub.pipeline import PECMAE
    from pecmae_hub.prototype_audio import check_render_settings

    check_render_settings(
        40 if args.steps is None else args.steps, args.guidance, args.seed, args.scheduler or "upstream"
    )
    if not Path(args.dir).is_dir():
        raise ModelNotFoundError(f"{args.dir} is not a model folder")
    model = PECMAE.from_pretrained(Path(args.dir), device="cpu", verify=not args.no_verify)
    sha = model.push_to_hub(
        args.repo_id,
        private=args.private,
        revision=args.revision,
        token=args.token,
        commit_message=args.commit_message,
        render=not args.no_render,
        steps=40 if args.steps is None else args.steps,
        guidance=args.guidance,
        seed=args.seed,
        scheduler=args.scheduler or "upstream",
        vocoder=args.vocoder,
        temperature=1.0 if args.temperature is None else args.temperature,
        autoencoder_repo_id=args.autoencoder_repo,
        fidelity=False if args.no_fidelity else (args.held_out or True),
    )
    from huggingface_hub import constants

    print(f"pushed {args.dir} to {constants.ENDPOINT}/{args.repo_id}/tree/{args.revision or 'main'} (commit {sha})")
    return 0


def _fit(text: str) -> str:
    """``text`` wrapped to the terminal's width when stderr is one (a log file keeps it on one line)."""
    import shutil
    import textwrap

    if not sys.stderr.isatty():
        return text
    return textwrap.fill(text, width=shutil.get_terminal_size().columns, subsequent_indent="  ")


def precision_words(model) -> str:
    """The mode a command ran at and, for ``--precision auto``, why in one short clause: ``precision bf16 (auto:
    the model's fidelity record vouches for it; int8 refused by it)``, or fp32 with the record's problem (the
    full reason is logged and shown in the app's Model tab)."""
    import re

    reason = getattr(model, "precision_reason", "asked for")
    if reason == "asked for":
        return f"precision {model.precision}"
    if model.precision == "fp32":
        return f"precision fp32 (auto: {reason})"
    refused = re.findall(r"not (\w+) \(", reason)  # the faster modes the record did not vouch for
    return f"precision {model.precision} (auto: the model's fidelity record vouches for it" + (
        f"; {', '.join(refused)} refused by it)" if refused else ")"
    )


def _load_model(args: argparse.Namespace):
    """The model named by the options of :func:`_model_args`."""
    from pecmae_hub.pipeline import PECMAE

    return PECMAE.from_pretrained(
        args.model,
        revision=args.revision,
        cache_dir=args.cache_dir,
        local_files_only=args.offline,
        device=args.device,
        precision=args.precision,
        verify=not args.no_verify,
    )


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"short name ({', '.join(known_names())}), Hub repo id or folder (default %(default)s)",
    )
    p.add_argument("--revision", help="branch, tag or commit of a Hub model (default: the registry's pin or main)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default %(default)s)")
    p.add_argument("--cache-dir", help="Hugging Face cache folder (default: $HF_HOME/hub)")
    p.add_argument("--offline", action="store_true", help="use the local cache only (like HF_HUB_OFFLINE=1)")
    p.add_argument(
        "--precision",
        default="auto",
        help="auto (default): the fast mode of the device (CPU: int8 GEMMs, about 2.3-2.5x faster encoding; "
        "CUDA: bf16 or fp16) when the model's fidelity record vouches for it, else fp32; fp32: exact; int8, "
        "bf16, fp16: that mode. The mode used is printed and stored with every result",
    )
    add_verify_flag(p)


def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        default=None,
        help="sampler: unipc (fast), upstream (exact), dpmsolver++ or ddim (default: the settings of the "
        "model's pre-rendered prototypes, else unipc)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="diffusion steps, 1..1000 (default: the pre-renders' steps, else unipc 14, upstream 40)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance weight w, v = v_cond + w (v_cond - v_uncond); 0 = none (default %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="scale of the starting noise, in (0, 2]: below 1 gives steadier audio with less variety "
        "(default: the pre-renders' temperature, else 1)",
    )
    p.add_argument(
        "--vocoder",
        default=None,
        choices=("vocos", "griffin-lim"),
        help="mel models: vocos (the neural vocoder, their default when they ship one) or griffin-lim "
        "(the classic phase reconstruction, for reproducing older renders)",
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed, >= 0; same seed, same audio (default %(default)s)")


def register_cli(subparsers) -> None:
    """Add ``classify``, ``sonify`` and ``push`` to the ``pecmae`` parser."""
    p = subparsers.add_parser(
        "classify",
        help=command_help("classify"),
        epilog=f"{EXAMPLES}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Classify audio files: one row per input in --out (CSV or JSONL), or JSONL on standard output. "
        "Resumable: inputs already in --out are skipped, failed ones retried; one run per --out at a time.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATHS_OR_DIR",
        help="audio files, folders (searched recursively), one list file (a path per line), or one "
        "hf://datasets/ORG/NAME[@REVISION] (streamed; the 'datasets' extra)",
    )
    add_dataset_args(p)
    p.add_argument(
        "--out",
        default=None,
        help="results file .csv or .jsonl (appended to, resumed), or - for JSONL on standard output "
        "(default: a short table on a terminal, JSONL into a pipe)",
    )
    p.add_argument("--top-k", type=int, default=3, help="prototypes listed per prediction (default %(default)s)")
    p.add_argument(
        "--keep-errors", action="store_true", help="keep earlier error rows instead of retrying those inputs"
    )
    p.add_argument("--retry-errors", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for scripts
    p.add_argument(
        "--max-seconds",
        type=float,
        default=MAX_SECONDS,
        help="longest input accepted, in seconds; longer ones get an error row (default %(default)g)",
    )
    add_progress_flag(p)
    _model_args(p)
    p.set_defaults(func=run_classify)

    p = subparsers.add_parser(
        "sonify",
        help=command_help("sonify"),
        description="Write the audio of one prototype (pre-rendered when available).",
    )
    _model_args(p)
    p.add_argument("--prototype", required=True, help="index p (e.g. 3) or class:k (e.g. violin:0)")
    p.add_argument(
        "--out",
        required=True,
        help="output audio file: .wav or .flac (16-bit), .ogg, .opus, .mp3, .aiff or .au; its folder must exist",
    )
    _render_args(p)
    p.set_defaults(func=run_sonify)

    p = subparsers.add_parser(
        "push",
        help=command_help("push"),
        description="Upload a PECMAE model folder with a model card and rendered prototypes.",
    )
    p.add_argument("dir", help="model folder (head config.json + model.safetensors)")
    p.add_argument("repo_id", help="target Hub repo, org/name")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", "--branch", dest="revision", help="branch to push to (created if missing)")
    p.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the stored login)")
    p.add_argument("--commit-message", help="commit message (default: 'Upload PECMAE model with pecmae-hub')")
    p.add_argument("--no-render", action="store_true", help="do not render missing prototype audio files")
    p.add_argument("--autoencoder-repo", help="reference this Hub autoencoder repo instead of uploading it")
    p.add_argument(
        "--held-out",
        nargs="+",
        metavar="AUDIO",
        help="held-out audio (files, folders, a list file) to measure the fidelity record on (fidelity.json, what "
        "lets precision auto run the model fast); default: keep the folder's record, or measure one on synthetic "
        "probes when it has none",
    )
    p.add_argument("--no-fidelity", action="store_true", help="do not measure a fidelity record (a valid one is kept)")
    add_verify_flag(p)
    _render_args(p)
    p.set_defaults(func=run_push)
