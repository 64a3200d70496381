"""The upstream autoencoder by name: downloaded from its authors' Hub repos, converted once, cached.

``materialize("encodecmae-diffusion-4s")`` returns a folder in our format (``config.json`` +
``model.safetensors`` + ``checksums.json`` + a ``README.md`` model card + ``upstream.json``) that
``Autoencoder.from_pretrained`` loads. It is made from

- ``lpepino/encodecmae2wav``: ``models/DiffTransformerAE2L8L1CLS-4s/{weights.pt,config.gin}`` (EnCodecMAE
  encoder, CLS encoder and diffusion decoder; ``-10s`` for the 10 s model), and
- ``facebook/encodec_24khz``: ``model.safetensors`` (EnCodec 24 kHz in the Transformers layout, whose
  decoder turns latents into audio; renamed by :func:`~pecmae_hub.convert.key_mapping.encodec_from_transformers`),

downloaded through :func:`pecmae_hub.storage.pretrained.resolve_file`, read with ``torch.load(weights_only=True)``
/ safetensors only, converted by :func:`~pecmae_hub.convert.autoencoder.convert_autoencoder` and cached
under ``<HF hub cache>/pecmae-hub/converted/<name>/<commit of repo 1>-<commit of repo 2>/``: a later call
(online: one HEAD request per repo for its commit; offline: the cache's refs) converts and reads nothing
else. :data:`CONVERSIONS` counts conversions per name.

Offline (``HF_HUB_OFFLINE=1``, ``local_files_only=True``) or with the Hub unreachable (one fast probe,
:mod:`pecmae_hub.storage.connectivity`), only caches are read; with nothing cached a
:class:`~pecmae_hub.errors.ModelNotFoundError` names the repos and files needed, at once.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError
from pecmae_hub.storage.connectivity import describe_unreachable, hub_endpoint, hub_offline, hub_reachable

logger = logging.getLogger(__name__)

AUTOENCODER_REPO = "lpepino/encodecmae2wav"
ENCODEC_REPO = "facebook/encodec_24khz"
UPSTREAM_FILE = "upstream.json"
ENCODEC_LICENCE = (
    "EnCodec 24 kHz weights (`facebook/encodec_24khz`, Meta AI; the Transformers conversion of "
    "`encodec_24khz-d7cc33bc.th`): released under **CC-BY-NC 4.0** (non-commercial use only)."
)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: conversions run in this process, per name (a cached call adds nothing)
CONVERSIONS: Counter = Counter()


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub repo."""

    repo_id: str
    filename: str


@dataclass(frozen=True)
class UpstreamModel:
    """A named upstream autoencoder: its source files and the attention heads (not stored in the tensors)."""

    name: str
    description: str
    weights: HubFile
    config_gin: HubFile
    encodec: HubFile
    frame_heads, cls_heads, denoiser_heads = 12, 8, 8  # upstream's (class constants, not fields)

    @property
    def files(self) -> tuple[HubFile, ...]:
        return (self.weights, self.config_gin, self.encodec)

    @property
    def repos(self) -> tuple[str, ...]:
        """The source repos, in cache-key order."""
        return tuple(dict.fromkeys(f.repo_id for f in self.files))


def _diffusion(seconds: int) -> UpstreamModel:
    folder = f"models/DiffTransformerAE2L8L1CLS-{seconds}s"
    return UpstreamModel(
        f"encodecmae-diffusion-{seconds}s",
        f"EnCodecMAE-base encoder + CLS encoder + diffusion decoder, {seconds} s chunks (encodecmae2wav)",
        HubFile(AUTOENCODER_REPO, f"{folder}/weights.pt"),
        HubFile(AUTOENCODER_REPO, f"{folder}/config.gin"),
        HubFile(ENCODEC_REPO, "model.safetensors"),
    )


UPSTREAM_MODELS: dict[str, UpstreamModel] = {m.name: m for m in (_diffusion(4), _diffusion(10))}


def known_names() -> list[str]:
    """The names :func:`materialize` accepts."""
    return sorted(UPSTREAM_MODELS)


def upstream_model(name: str) -> UpstreamModel:
    """The table entry of ``name``; :class:`ModelNotFoundError` listing the known names otherwise."""
    try:
        return UPSTREAM_MODELS[name]
    except (KeyError, TypeError):
        raise ModelNotFoundError(
            f"unknown upstream autoencoder {name!r}; known names: {', '.join(known_names())}"
        ) from None


def converted_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted folders are cached: ``<cache_dir or HF hub cache>/pecmae-hub/converted``."""
    from huggingface_hub import constants

    return Path(os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE) / "pecmae-hub" / "converted"


def _revisions(spec: UpstreamModel, revision: str | Mapping[str, str | None] | None) -> dict[str, str | None]:
    if revision is None or isinstance(revision, str):
        return {repo: revision for repo in spec.repos}
    unknown = sorted(set(revision) - set(spec.repos))
    if unknown:
        raise ConfigError(
            f"revision given for {unknown}, which {spec.name!r} does not use; its source repos are "
            f"{', '.join(spec.repos)}"
        )
    return {repo: revision.get(repo) for repo in spec.repos}


def _cached_commit(cache_dir, repo_id: str, revision: str | None) -> str | None:
    """The commit the HF cache's ``refs/<revision>`` points at (no network), or None."""
    from huggingface_hub import constants

    root = Path(os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE)
    ref = root / ("models--" + repo_id.replace("/", "--")) / "refs" / (revision or "main")
    try:
        text = ref.read_text().strip()
    except OSError:
        return None
    return text if _COMMIT.match(text) else None


def _remote_commit(spec: UpstreamModel, repo_id: str, revision: str | None, token) -> str | None:
    """The commit ``revision`` of ``repo_id`` resolves to (one HEAD request); None on a network failure."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    probe = next(f for f in spec.files if f.repo_id == repo_id)
    where = f"source repo {repo_id!r} of {spec.name!r}"
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo_id, probe.filename, revision=revision), token=token)
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{where} was not found on the Hub ({hub_endpoint()}), or is private/gated "
            "and needs a token (token=... or `hf auth login`)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"revision {revision!r} not found in {where}") from None
    except hf_errors.LocalEntryNotFoundError:
        return None
    except hf_errors.EntryNotFoundError:
        raise ModelNotFoundError(
            f"{probe.filename!r} is not in {where} (revision {revision or 'main'}): has the "
            "upstream layout changed? Pin an older revision with revision={repo: commit}"
        ) from None
    except Exception as exc:  # connection reset, timeout, proxy error ...: use the cache instead
        logger.warning(
            "cannot ask the Hub which commit %s@%s is (%s); using the local cache", repo_id, revision or "main", exc
        )
        return None
    return meta.commit_hash if meta.commit_hash and _COMMIT.match(meta.commit_hash) else None


@dataclass
class _Resolved:
    spec: UpstreamModel
    revisions: dict[str, str | None]
    commits: dict[str, str | None]
    use_hub: bool
    why_not: str  # why the Hub is not used (when it is not)

    @property
    def pinned(self) -> bool:
        return any(self.revisions.values())

    @property
    def key(self) -> str | None:
        if not all(self.commits.values()):
            return None
        return "-".join(str(self.commits[repo]) for repo in self.spec.repos)


def _resolve(name, revision, cache_dir, token, local_files_only) -> _Resolved:
    spec = upstream_model(name)
    revisions = _revisions(spec, revision)
    if local_files_only:
        use_hub, why = False, "local_files_only=True"
    elif hub_offline() or not hub_reachable():
        use_hub, why = False, describe_unreachable()
    else:
        use_hub, why = True, ""
    commits: dict[str, str | None] = {}
    for repo, rev in revisions.items():
        if rev and _COMMIT.match(rev):
            commits[repo] = rev
            continue
        commit = _remote_commit(spec, repo, rev, token) if use_hub else None
        if use_hub and commit is None:
            use_hub, why = False, f"the Hub ({hub_endpoint()}) did not answer"
        commits[repo] = commit or _cached_commit(cache_dir, repo, rev)
    return _Resolved(spec, revisions, commits, use_hub, why)


def _complete(folder: Path) -> bool:  # written last by a rename: present means complete
    return all((folder / n).is_file() for n in ("config.json", "model.safetensors", UPSTREAM_FILE))


def _newest_converted(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _complete(p)]
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


def _not_available(r: _Resolved, root: Path, detail: str = "") -> ModelNotFoundError:
    spec = r.spec
    lines = [
        f"upstream autoencoder {spec.name!r} is not converted in the local cache ({root}) and cannot be "
        f"converted now: {r.why_not or 'its source files are missing'}{f' ({detail})' if detail else ''}. "
        "It is made from these files:"
    ]
    for repo in spec.repos:
        names = ", ".join(f.filename for f in spec.files if f.repo_id == repo)
        lines.append(f"  - {repo} (revision {r.commits.get(repo) or r.revisions.get(repo) or 'main'}): {names}")
    lines.append(
        "Run this once with the Hub reachable (it downloads, converts and caches them), copy a Hugging Face "
        "cache that holds them, or download them elsewhere (`hf download REPO FILE ...`) and convert by hand: "
        "`pecmae convert --autoencoder weights.pt --config-gin config.gin --encodec model.safetensors "
        "--out DIR`, then load DIR."
    )
    return ModelNotFoundError("\n".join(lines))


def sources(
    name: str,
    *,
    revision: str | Mapping[str, str | None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> dict[str, str]:
    """The pinned ``{source repo id: commit}`` of ``name`` (for ``AutoencoderRef(name=..., sources=...)``).

    ``revision`` is one revision for every source repo, or ``{repo_id: revision}``. Online, one HEAD
    request per repo; offline, the cache's refs (or the newest converted folder when nothing is pinned).
    """
    r = _resolve(name, revision, cache_dir, token, local_files_only)
    if r.key is not None:
        return {repo: str(commit) for repo, commit in r.commits.items()}
    if not r.pinned and (newest := _newest_converted(converted_root(cache_dir) / name)) is not None:
        return sources_of(newest)
    raise _not_available(r, converted_root(cache_dir) / name)


def sources_of(folder: str | os.PathLike) -> dict[str, str]:
    """The ``{source repo id: commit}`` a folder made by :func:`materialize` was converted from (no network)."""
    path = Path(folder) / UPSTREAM_FILE
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data["sources"].items()}
    except FileNotFoundError:
        raise ModelNotFoundError(f"{folder} has no {UPSTREAM_FILE}: it was not made by materialize()") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); delete its folder to convert again") from None


def materialize(
    name: str,
    *,
    revision: str | Mapping[str, str | None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """The folder of the upstream autoencoder ``name``, converted to our format once and then cached.

    Args:
        name: one of :func:`known_names` (``"encodecmae-diffusion-4s"``, ``"encodecmae-diffusion-10s"``).
        revision: a revision for every source repo, or ``{repo_id: revision}`` (e.g. the ``sources`` of an
            ``AutoencoderRef``); default ``main``. Commits make the result fully reproducible.
        cache_dir: the Hugging Face hub cache (downloads and ``pecmae-hub/converted/``).
        token, local_files_only: as for ``huggingface_hub.hf_hub_download``; ``HF_HUB_OFFLINE`` is honoured.
        force_download: download the source files again and convert again.

    Returns ``<cache>/pecmae-hub/converted/<name>/<commit>-<commit>/``, loadable with ``Autoencoder.from_pretrained``.

    Raises:
        ModelNotFoundError: unknown name (the known ones are listed), missing repo/revision/file, or
            offline / Hub unreachable with nothing cached (the repos and files needed are listed).
        CheckpointError: the upstream files do not convert (unknown keys, shapes ...).
    """
    r = _resolve(name, revision, cache_dir, token, local_files_only)
    root = converted_root(cache_dir) / name
    if force_download and not r.use_hub:
        raise ModelNotFoundError(f"force_download=True needs the Hub to download {name!r} again: {r.why_not}")
    folder = root / r.key if r.key else None
    if folder is not None and not force_download and _complete(folder):
        logger.info("%s: using the conversion cached in %s", name, folder)
        return folder
    try:
        if folder is None:
            raise _not_available(r, root)
        return _convert(r, root, cache_dir, token, force_download)
    except ModelNotFoundError:
        if r.use_hub or r.pinned or (newest := _newest_converted(root)) is None:
            raise
        logger.warning("%s: %s; using the newest conversion cached in %s", name, r.why_not, newest)
        return newest


def _download(r: _Resolved, root: Path, cache_dir, token, force_download: bool) -> tuple[dict, dict[str, str]]:
    """Local paths of the source files and the commits they come from.

    Online, the first file of each repo is fetched at the requested revision (so the HF cache records
    which commit ``main`` is, for later offline calls) and the others at the commit it came from.
    """
    from pecmae_hub.storage.pretrained import resolve_file

    paths: dict[HubFile, Path] = {}
    commits = {repo: str(c) for repo, c in r.commits.items()}
    for f in r.spec.files:
        first = not any(g.repo_id == f.repo_id for g in paths)
        revision = (r.revisions[f.repo_id] or "main") if first and r.use_hub else commits[f.repo_id]
        try:
            paths[f] = path = resolve_file(
                f.repo_id,
                f.filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=not r.use_hub,
                token=token,
                force_download=force_download,
            )
        except ModelNotFoundError as exc:
            if r.use_hub:
                raise
            raise _not_available(r, root, detail=f"{f.repo_id}/{f.filename} is not cached") from exc
        snapshot = Path(path).parts[-len(f.filename.split("/")) - 1]
        if first and _COMMIT.match(snapshot) and snapshot != commits[f.repo_id]:
            logger.warning("%s moved to commit %s while downloading; converting that commit", f.repo_id, snapshot)
            commits[f.repo_id] = snapshot
    return paths, commits


def _convert(r: _Resolved, root: Path, cache_dir, token, force_download: bool) -> Path:
    from pecmae_hub.convert.autoencoder import convert_autoencoder
    from pecmae_hub.models.autoencoder import Autoencoder

    spec = r.spec
    paths, commits = _download(r, root, cache_dir, token, force_download)
    folder = root / "-".join(commits[repo] for repo in spec.repos)
    if not force_download and _complete(folder):
        return folder
    logger.info("%s: converting %s", spec.name, ", ".join(f"{f.repo_id}/{f.filename}" for f in spec.files))
    conversion = convert_autoencoder(
        paths[spec.weights],
        paths[spec.encodec],
        None,
        config_gin=paths[spec.config_gin],
        frame_heads=spec.frame_heads,
        cls_heads=spec.cls_heads,
        denoiser_heads=spec.denoiser_heads,
        warn=logger.warning,
    )
    model = conversion.model
    model.config.source = f"{spec.name}: " + " + ".join(f"{repo}@{c}" for repo, c in commits.items())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        (tmp / "README.md").write_text(_card(spec, commits, conversion))
        sha256 = {f"{f.repo_id}/{f.filename}": s.sha256 for f, s in zip(spec.files, _by_file(spec, conversion))}
        record = {
            "name": spec.name,
            "sources": commits,
            "files": [[f.repo_id, f.filename] for f in spec.files],
            "sha256": sha256,
        }
        (tmp / UPSTREAM_FILE).write_text(json.dumps(record, indent=2) + "\n")
        Autoencoder.from_pretrained(tmp)  # strict round trip of what was written
        if folder.exists() and (force_download or not _complete(folder)):
            shutil.rmtree(folder)  # a forced re-conversion, or a damaged earlier attempt
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _complete(folder):  # another process finished the same conversion first: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    CONVERSIONS[spec.name] += 1
    logger.info("%s: converted into %s", spec.name, folder)
    return folder


def _by_file(spec: UpstreamModel, conversion) -> list:
    """The conversion's SourceFile records in the order of ``spec.files`` (weights, config.gin, EnCodec)."""
    by_role = {s.role: s for s in conversion.sources}
    return [by_role["diffusion autoencoder"], by_role["config.gin"], by_role["EnCodec"]]


def _card(spec: UpstreamModel, commits: dict[str, str], conversion) -> str:
    """README.md: the source repos with their commits and licences (hub.cards.render_autoencoder_card)."""
    from pecmae_hub.convert.autoencoder import LICENCE_NOTES
    from pecmae_hub.hub.cards import render_autoencoder_card

    endpoint = hub_endpoint().rstrip("/")
    rows = [
        SimpleNamespace(
            role=s.role,
            name=f"{f.repo_id}@{commits[f.repo_id][:12]}/{f.filename}",
            container=s.container,
            size=s.size,
            sha256=s.sha256,
        )
        for f, s in zip(spec.files, _by_file(spec, conversion))
    ]
    repo_lines = "\n".join(
        f"- [`{repo}`]({endpoint}/{repo}/tree/{commit}) at commit `{commit}`: "
        + ", ".join(f"`{f.filename}`" for f in spec.files if f.repo_id == repo)
        for repo, commit in commits.items()
    )
    intro = (
        f"`{spec.name}`: {spec.description}. Converted by pecmae-hub (`materialize({spec.name!r})`) on "
        f"{_dt.date.today().isoformat()} from its authors' files on the Hugging Face Hub:\n\n{repo_lines}\n\n"
        "Weights are unchanged; only key names differ (the shared feed-forward network of each transformer is "
        "stored once; EnCodec's quantizer is dropped). The EnCodec weights come in the Transformers layout and "
        "equal those of `encodec_24khz-d7cc33bc.th`."
    )
    return render_autoencoder_card(
        title=f"{spec.name} (converted upstream diffusion autoencoder)",
        intro=intro,
        config=conversion.model.config,
        chunk_frames=conversion.model.chunk_frames,
        sources=rows,
        licence_notes=[ENCODEC_LICENCE, LICENCE_NOTES["autoencoder"]],
        notes=conversion.notes,
        dropped=conversion.dropped,
    )
