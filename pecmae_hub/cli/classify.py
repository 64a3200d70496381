"""``pecmae classify``, ``pecmae sonify`` and ``pecmae push``.

``classify`` is resumable: inputs already present in ``--out`` are skipped, each result is appended
and flushed at once, and a file that fails gets a row with its ``error`` while the others finish.
"""
from __future__ import annotations

from pecmae_hub.cli.commands import command_help

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from pecmae_hub.audio import collect_audio_files, file_key
from pecmae_hub.errors import ConfigError, ModelNotFoundError
from pecmae_hub.hub.registry import DEFAULT_MODEL, known_names

FIXED_COLUMNS = ["path", "label", "confidence", "duration", "n_chunks", "top_prototypes", "error"]


def output_format(out: str) -> str:
    suffix = Path(out).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ConfigError(f"--out must end in .csv or .jsonl, got {out!r}")


def read_done(out: str, fmt: str) -> tuple[dict[str, str], list[str] | None]:
    """Inputs already in ``out`` (path -> error text, '' when it succeeded) and the CSV header."""
    if not os.path.exists(out) or os.path.getsize(out) == 0:
        return {}, None
    done, header = {}, None
    with open(out, newline="", encoding="utf-8") as f:
        if fmt == "csv":
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or "path" not in header or "error" not in header:
                raise ConfigError(f"{out} exists but is not a `pecmae classify` CSV (no path/error columns)")
            ip, ie = header.index("path"), header.index("error")
            for row in reader:
                if len(row) == len(header):  # a row cut short by a crash is redone
                    done[row[ip]] = row[ie]
        else:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and "path" in row:
                    done[row["path"]] = row.get("error") or ""
    return done, header


def _drop_rows(out: str, fmt: str, paths: set[str]) -> None:
    """Rewrite ``out`` without the rows of ``paths`` (used by --retry-errors)."""
    with open(out, newline="", encoding="utf-8") as f:
        lines = f.readlines()
    keep = lines[:1] if fmt == "csv" else []
    for line in lines[len(keep):]:
        try:
            path = next(csv.reader([line]))[0] if fmt == "csv" else json.loads(line).get("path")
        except (json.JSONDecodeError, StopIteration, AttributeError):
            continue
        if path not in paths:
            keep.append(line)
    from pecmae_hub.fileio import atomic_write_text

    atomic_write_text(out, "".join(keep))


def _top_text(pred) -> str:
    return "; ".join(f"{t['class']}:{t['k']}={t['contribution']:.4f}" for t in pred.top_prototypes)


def run_classify(args: argparse.Namespace) -> int:
    fmt = output_format(args.out)
    # folders expanded, one file under several spellings once; missing files stay, to get an error row
    inputs = [f.path for f in collect_audio_files(args.paths)]
    done, header = read_done(args.out, fmt)
    if args.retry_errors:
        failed = {p for p, e in done.items() if e}
        if failed:
            _drop_rows(args.out, fmt, failed)
            done = {p: e for p, e in done.items() if not e}
    done_files = {file_key(p) for p in done}  # an input done under another spelling is done
    todo = [p for p in inputs if file_key(p) not in done_files]
    skipped = len(inputs) - len(todo)
    if not todo:
        print(f"pecmae classify: nothing to do, all {skipped} inputs are already in {args.out}", file=sys.stderr)
        return 0
    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained(args.model, revision=args.revision, cache_dir=args.cache_dir,
                                   local_files_only=args.offline, device=args.device)
    columns = FIXED_COLUMNS + [f"p_{label}" for label in model.labels]
    if header is not None and header != columns:
        raise ConfigError(f"{args.out} has columns {header}, not those of model {args.model!r}; use another --out")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    from tqdm.auto import tqdm

    with open(args.out, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f) if fmt == "csv" else None
        if writer is not None and header is None:
            writer.writerow(columns)
        for path in tqdm(todo, desc="classifying", unit="file", disable=args.no_progress, file=sys.stderr):
            try:
                pred = model.classify(path, top_k=args.top_k)
                error = ""
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                pred, error = None, f"{type(exc).__name__}: {exc}"
                failures.append((path, error))
            if writer is not None:
                if pred is None:
                    row = [path, "", "", "", "", "", error] + [""] * len(model.labels)
                else:
                    row = [path, pred.label, f"{pred.confidence:.6f}", f"{pred.duration:.3f}", len(pred.chunk_starts),
                           _top_text(pred), ""] + [f"{pred.scores[c]:.6f}" for c in model.labels]
                writer.writerow(row)
            else:
                record = {"path": path, "error": error or None, **(pred.to_dict() if pred else {})}
                f.write(json.dumps(record) + "\n")
            f.flush()
    ok = len(todo) - len(failures)
    print(f"pecmae classify: {ok} classified, {skipped} skipped (already in {args.out}), {len(failures)} failed",
          file=sys.stderr)
    for path, error in failures[:20]:
        print(f"  failed: {path}: {error}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more (see the error column of {args.out})", file=sys.stderr)
    return 0 if ok > 0 else 1


def run_sonify(args: argparse.Namespace) -> int:
    from pecmae_hub.audio import write_wav
    from pecmae_hub.pipeline import PECMAE

    model = PECMAE.from_pretrained(args.model, revision=args.revision, cache_dir=args.cache_dir,
                                   local_files_only=args.offline, device=args.device)
    p = model.prototype_index(args.prototype)
    rendered = model.prototype_audio_path(p, args.steps, args.guidance, args.seed) is not None
    wav = model.sonify(p, steps=args.steps, guidance=args.guidance, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.out, wav)
    label, k = model.head.prototype_name(p)
    print(f"wrote {args.out}: prototype {p} ({label}:{k}), {len(wav) / 24000:.2f} s, "
          f"{'pre-rendered' if rendered else 'decoded'}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from pecmae_hub.pipeline import PECMAE

    if not Path(args.dir).is_dir():
        raise ModelNotFoundError(f"{args.dir} is not a model folder")
    model = PECMAE.from_pretrained(Path(args.dir), device="cpu")
    sha = model.push_to_hub(args.repo_id, private=args.private, revision=args.revision, token=args.token,
                            commit_message=args.commit_message, render=not args.no_render, steps=args.steps,
                            guidance=args.guidance, seed=args.seed, autoencoder_repo_id=args.autoencoder_repo)
    from huggingface_hub import constants

    print(f"pushed {args.dir} to {constants.ENDPOINT}/{args.repo_id}/tree/{args.revision or 'main'} (commit {sha})")
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"short name ({', '.join(known_names())}), Hub repo id or folder (default %(default)s)")
    p.add_argument("--revision", help="branch, tag or commit of a Hub model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default %(default)s)")
    p.add_argument("--cache-dir", help="Hugging Face cache folder (default: $HF_HOME/hub)")
    p.add_argument("--offline", action="store_true", help="use the local cache only (like HF_HUB_OFFLINE=1)")


def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=40, help="diffusion steps (default %(default)s)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default %(default)s)")


def register_cli(subparsers) -> None:
    """Add ``classify``, ``sonify`` and ``push`` to the ``pecmae`` parser."""
    p = subparsers.add_parser("classify", help=command_help("classify"),
                              description="Classify audio files; resumable, one row per input in --out.")
    p.add_argument("paths", nargs="+", metavar="PATHS_OR_DIR", help="audio files and/or folders")
    p.add_argument("--out", required=True, help="results file, .csv or .jsonl (appended to; done inputs are skipped)")
    p.add_argument("--top-k", type=int, default=3, help="prototypes listed per prediction (default %(default)s)")
    p.add_argument("--retry-errors", action="store_true", help="redo inputs whose earlier row has an error")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _model_args(p)
    p.set_defaults(func=run_classify)

    p = subparsers.add_parser("sonify", help=command_help("sonify"),
                              description="Write the audio of one prototype (pre-rendered when available).")
    _model_args(p)
    p.add_argument("--prototype", required=True, help="index p (e.g. 3) or class:k (e.g. violin:0)")
    p.add_argument("--out", required=True, help="output WAV file")
    _render_args(p)
    p.set_defaults(func=run_sonify)

    p = subparsers.add_parser("push", help=command_help("push"),
                              description="Upload a PECMAE model folder with a model card and rendered prototypes.")
    p.add_argument("dir", help="model folder (head config.json + model.safetensors)")
    p.add_argument("repo_id", help="target Hub repo, org/name")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", "--branch", dest="revision", help="branch to push to (created if missing)")
    p.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the stored login)")
    p.add_argument("--commit-message", help="commit message")
    p.add_argument("--no-render", action="store_true", help="do not render missing prototype WAVs")
    p.add_argument("--autoencoder-repo", help="reference this Hub autoencoder repo instead of uploading it")
    _render_args(p)
    p.set_defaults(func=run_push)
