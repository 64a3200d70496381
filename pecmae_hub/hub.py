"""Where models live: the registry of short names, model files (folder or pinned Hub commit), cards, push.

Short names map to Hub repos of the ``pecmae-hub`` organisation (``PECMAE_HUB_ORG`` points the
registry at another one); ``gm-solos`` is the model shipped inside the package. A repo holds a
PECMAE model in the folder layout documented in ``docs/hub.md``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, ModelNotFoundError
from .weights import CONFIG_NAME, WEIGHTS_NAME, resolve_file

ORG_ENV = "PECMAE_HUB_ORG"
DEFAULT_ORG = "pecmae-hub"
DEFAULT_MODEL = "gm-solos"
AUTOENCODER_REPO_NAME = "encodecmae-diffusion-4s"  # the shared autoencoder repo of the registry models
LIBRARY_NAME = "pecmae-hub"
INFO_NAME, METRICS_NAME, PROTOTYPES_DIR = "pecmae.json", "metrics.json", "prototypes"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_AUTOENCODERS: dict[tuple, Any] = {}  # in-process cache, keyed by resolved commit/folder and device


@dataclass(frozen=True)
class RegistryEntry:
    """A short model name: ``repo_name`` inside the registry organisation, or an embedded folder."""

    name: str
    repo_name: str | None
    dataset: str
    description: str
    revision: str | None = None

    @property
    def embedded(self) -> bool:
        return self.repo_name is None


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry("gtzan", "gtzan-pecmae-5", "gtzan",
                      "music genre (GTZAN, 10 classes), 5 prototypes per class"),
        RegistryEntry("medley-solos-db", "medley-solos-db-pecmae-20", "medley-solos-db",
                      "solo instrument (Medley-solos-DB, 8 classes), 20 prototypes per class"),
        RegistryEntry("gm-solos", None, "gm-solos",
                      "solo instrument (synthetic GM-Solos, shipped with the package; no download)"),
    )
}


def hub_org() -> str:
    """Organisation of the registry repos: ``$PECMAE_HUB_ORG`` or ``pecmae-hub``."""
    return os.environ.get(ORG_ENV, "").strip() or DEFAULT_ORG


def registry_repo_id(name: str) -> str | None:
    """Hub repo id of a short name (None for the embedded model)."""
    entry = REGISTRY[name]
    return None if entry.embedded else f"{hub_org()}/{entry.repo_name}"


def autoencoder_repo_id() -> str:
    """The Hub repo of the autoencoder shared by the registry models."""
    return f"{hub_org()}/{AUTOENCODER_REPO_NAME}"


def known_names() -> list[str]:
    return sorted(REGISTRY)


def embedded_candidates(name: str = DEFAULT_MODEL) -> list[Path]:
    """Folders searched for an embedded model: next to the package (wheel), then the source tree."""
    package = Path(__file__).resolve().parent
    return [package / "checkpoints" / name, package.parent / "checkpoints" / name]


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The shipped folder of an embedded model; :class:`ModelNotFoundError` naming the places looked at."""
    for folder in embedded_candidates(name):
        if (folder / "config.json").is_file():
            return folder
    places = " or ".join(str(p) for p in embedded_candidates(name))
    raise ModelNotFoundError(
        f"the embedded model {name!r} is not installed (looked for {places}); train it with "
        f"`pecmae recipe {name}` or use a Hub model such as 'gtzan'"
    )


def resolve_model(name_or_path: str | os.PathLike, revision: str | None = None) -> tuple[str, str | Path, str | None]:
    """Classify a model reference: ``("folder", Path, None)`` or ``("hub", repo_id, revision)``.

    Order: registry short name, existing folder, ``org/name`` repo id. Anything else raises
    :class:`ModelNotFoundError` listing the known short names.
    """
    text = os.fspath(name_or_path)
    if text in REGISTRY:
        entry = REGISTRY[text]
        if entry.embedded:
            return "folder", embedded_model_dir(text), None
        return "hub", registry_repo_id(text), revision or entry.revision
    folder = Path(text).expanduser()
    if folder.is_dir():
        return "folder", folder, None
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and all(text.split("/")):
        return "hub", text, revision
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a short name ({', '.join(known_names())}), not an existing folder, "
        f"and not a Hub repo id of the form 'org/name'"
    )


class ModelFiles:
    """Read-only access to the files of one model: a local folder, or a Hub repo pinned to one commit.

    The first file fetched from a Hub repo fixes the commit (read from the cache path
    ``snapshots/<sha>/``); later files are fetched at that exact commit, so a model never mixes
    files of two revisions, and cached files need no request at all. Offline (``local_files_only``
    or ``HF_HUB_OFFLINE=1``) only the cache is read.
    """

    def __init__(self, *, folder: str | os.PathLike | None = None, repo_id: str | None = None,
                 revision: str | None = None, cache_dir: str | None = None, local_files_only: bool = False,
                 subfolder: str = ""):
        if (folder is None) == (repo_id is None):
            raise ValueError("give exactly one of folder= and repo_id=")
        self.folder = Path(folder) if folder is not None else None
        self.repo_id, self.revision, self.cache_dir = repo_id, revision, cache_dir
        self.local_files_only = local_files_only
        self.subfolder = subfolder.strip("/")
        self.commit: str | None = revision if revision and _COMMIT.match(revision) else None

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def describe(self) -> str:
        if self.folder is not None:
            return str(self.folder / self.subfolder) if self.subfolder else str(self.folder)
        where = f"{self.repo_id}@{self.commit or self.revision or 'main'}"
        return f"{where}/{self.subfolder}" if self.subfolder else where

    def _offline(self) -> bool:
        from huggingface_hub import constants

        return self.local_files_only or bool(constants.HF_HUB_OFFLINE)

    def get(self, filename: str, required: bool = True) -> Path | None:
        """Local path of ``filename`` (downloaded if needed); None for a missing optional file."""
        name = f"{self.subfolder}/{filename}" if self.subfolder else filename
        if self.folder is not None:
            return resolve_file(self.folder, name, required=required)
        if not required and self.commit:
            from huggingface_hub import try_to_load_from_cache
            from huggingface_hub.file_download import _CACHED_NO_EXIST

            if try_to_load_from_cache(self.repo_id, name, cache_dir=self.cache_dir, revision=self.commit) is _CACHED_NO_EXIST:
                return None  # the Hub already told us this commit has no such file
        path = resolve_file(self.repo_id, name, revision=self.commit or self.revision, cache_dir=self.cache_dir,
                            local_files_only=self._offline(), required=required)
        if path is not None and self.commit is None:
            parts = Path(path).parts
            depth = len(Path(name).parts)
            if len(parts) > depth and _COMMIT.match(parts[-depth - 1]):
                self.commit = parts[-depth - 1]
        return path

    def json(self, filename: str, required: bool = True) -> Any:
        path = self.get(filename, required=required)
        return None if path is None else json.loads(Path(path).read_text())

    def local_dir(self) -> Path:
        """The local folder holding the files fetched so far (the snapshot folder for a Hub repo)."""
        path = self.get("config.json")
        return Path(path).parent

    def child(self, subfolder: str) -> "ModelFiles":
        """The files of ``subfolder`` of this model (same folder, or same repo *and commit*)."""
        sub = f"{self.subfolder}/{subfolder}" if self.subfolder else subfolder
        if self.folder is not None:
            return ModelFiles(folder=self.folder, subfolder=sub)
        return ModelFiles(repo_id=self.repo_id, revision=self.commit or self.revision, cache_dir=self.cache_dir,
                          local_files_only=self.local_files_only, subfolder=sub)


def clear_cache() -> None:
    """Forget the autoencoders loaded in this process."""
    _AUTOENCODERS.clear()


def autoencoder_fingerprint(ae) -> str:
    """Short hash of an autoencoder's architecture config (provenance fields excluded)."""
    cfg = {k: v for k, v in ae.config.to_dict().items() if k not in ("source", "version")}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def load_autoencoder(spec: dict, files: ModelFiles, *, cache_dir: str | None = None, local_files_only: bool = False,
                     device="cpu"):
    """The autoencoder named by a head config ``spec`` (``{"repo_id", "revision", "path"}``), with
    ``path`` relative to the head's ``files``; loaded once per process per commit/folder and device.

    Returns ``(autoencoder, reference)``; the reference records where it came from.
    """
    from .autoencoder import Autoencoder

    head_name = files.describe()
    path, repo_id = spec.get("path"), spec.get("repo_id")
    if path:
        if files.is_hub and (Path(path).is_absolute() or ".." in Path(path).parts):
            raise ConfigError(f"head {head_name}: autoencoder path {path!r} must stay inside the repo")
        ae_files = files.child(path)
    elif repo_id:
        ae_files = ModelFiles(repo_id=repo_id, revision=spec.get("revision"), cache_dir=cache_dir,
                              local_files_only=local_files_only)
    else:
        raise ConfigError(f"head {head_name} does not name its autoencoder (config['autoencoder'] has neither "
                          "'path' nor 'repo_id'); pass autoencoder=... to PECMAE.from_pretrained")
    config_path = ae_files.get(CONFIG_NAME)
    if ae_files.is_hub:
        key = ("hub", ae_files.repo_id, ae_files.commit, ae_files.subfolder, str(device))
    else:
        weights = config_path.parent / WEIGHTS_NAME
        stamp = weights.stat().st_mtime_ns if weights.exists() else 0
        key = ("folder", str(config_path.parent.resolve()), stamp, str(device))
    ref = {"repo_id": repo_id if not path else files.repo_id, "revision": spec.get("revision"), "path": path,
           "commit": ae_files.commit, "source": ae_files.describe()}
    if key not in _AUTOENCODERS:
        ae_files.get(WEIGHTS_NAME)
        _AUTOENCODERS[key] = Autoencoder.from_pretrained(config_path.parent, device=str(device))
    return _AUTOENCODERS[key], ref


_METRIC_WORDS = re.compile(r"acc|f1|precision|recall|auc|map\b", re.I)


def metric_entries(metrics: dict | None) -> tuple[str | None, list[tuple[str, str, float]]]:
    """The evaluation split and its ``(type, display name, value)`` metrics from a ``metrics.json`` dict.

    Accepted layouts: ``{"metrics": {...}, "split": ...}``, ``pecmae train``'s ``{"test": {...}, "val":
    {...}, ...}`` (test preferred) or flat ``{"accuracy": ..., "split": ...}``. Only accuracy-, F1-,
    precision-, recall- and AUC-like numbers count (not seeds, step counts or sizes).
    """
    if not metrics:
        return None, []
    split = metrics.get("split")
    values = metrics.get("metrics")
    if not isinstance(values, dict):
        for name in ("test", "val"):
            if isinstance(metrics.get(name), dict):
                values, split = metrics[name], split or name
                break
        else:
            values = metrics
    out = []
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _METRIC_WORDS.search(key):
            kind = "f1" if "f1" in key.lower() else key.lower()
            out.append((kind, key.replace("_", " "), float(value)))
    return split, out


def render_model_card(*, model_name: str, labels: list[str], protos_per_class: int, info: dict | None = None,
                      metrics: dict | None = None, base_model: str | None = None, repo_id: str | None = None,
                      render_settings: dict | None = None) -> str:
    """The ``README.md`` of a PECMAE repo: YAML front matter (library, task, tags, datasets, base model,
    license, model-index) and a text on the model, its data split, usage and its prototypes."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    info = dict(info or {})
    dataset = info.get("dataset") or "unknown"
    metric_split, entries = metric_entries(metrics)
    split = metric_split or info.get("split") or "the dataset's standard split"
    eval_results = [
        EvalResult(task_type="audio-classification", task_name="Audio classification", dataset_type=dataset,
                   dataset_name=dataset, dataset_split=str(split), metric_type=kind, metric_name=name, metric_value=value)
        for kind, name, value in entries
    ]
    data = ModelCardData(
        library_name=LIBRARY_NAME, pipeline_tag="audio-classification", license=info.get("license", "mit"),
        tags=sorted({"pecmae", "prototype-learning", "interpretability", "audio", "music", *info.get("tags", [])}),
        datasets=info.get("datasets") or [dataset], base_model=base_model,
        model_name=model_name if eval_results else None, eval_results=eval_results or None,
    )
    ref = repo_id or model_name
    k = protos_per_class
    metric_lines = "\n".join(f"| {name} | {value:.4f} |" for _, name, value in entries)
    settings = render_settings or {}
    body = f"""
# {model_name}: PECMAE prototype classifier

{info.get("description") or f"Interpretable music audio classifier trained on {dataset}."}

PECMAE ([arXiv 2402.09318](https://arxiv.org/abs/2402.09318)) classifies audio by comparing the
embedding of every {info.get("chunk_seconds", 4)}-second chunk with **{len(labels) * k} learned prototypes**
({k} per class). A linear layer turns the similarities into class scores, so every decision can be
traced to the prototypes that drove it, and each prototype can be turned back into audio by the
autoencoder's diffusion decoder.

- Classes ({len(labels)}): {", ".join(labels)}
- Autoencoder: {base_model or "shipped in this repository (`autoencoder/`)"}
- Training data: {dataset}; evaluation split: {split}

{"| metric | value |" + chr(10) + "|---|---|" + chr(10) + metric_lines if metric_lines else "No evaluation metrics were recorded for this model."}

## Usage

```bash
pip install pecmae-hub
pecmae classify song.mp3 --model {ref} --out predictions.csv
```

```python
from pecmae_hub.pipeline import PECMAE

model = PECMAE.from_pretrained("{ref}")
prediction = model.classify("song.mp3")
print(prediction.label, prediction.scores)
for proto in prediction.top_prototypes:   # the prototypes that drove the decision
    print(proto["class"], proto["k"], proto["contribution"])
```

## Listening to the prototypes

`prototypes/` holds one WAV per prototype (`p<index>_<class>_<k>.wav`, 24 kHz), rendered with
{settings.get("steps", 40)} diffusion steps, guidance {settings.get("guidance", 1.0)} and seed {settings.get("seed", 0)}
(see `prototypes/index.json`). Other settings are decoded on the fly:

```python
audio = model.sonify(("{labels[0]}", 0), steps=40, guidance=1.0, seed=0)   # float32, 24 kHz
```

or `pecmae sonify --model {ref} --prototype {labels[0]}:0 --out prototype.wav`.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def push_folder(folder: str | os.PathLike, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, commit_message: str | None = None) -> str:
    """Upload ``folder`` to ``repo_id`` (created if missing; branch ``revision`` created if missing).

    Returns the commit sha of the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision, token=token,
                             commit_message=commit_message or "Upload PECMAE model with pecmae-hub")
    return info.oid
