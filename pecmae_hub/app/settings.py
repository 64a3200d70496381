"""Settings of the PECMAE Hub app, read from the environment once at build time.

The variables, their defaults and meanings are :data:`ENVIRONMENT` (docs/app.md prints the same table; a
test keeps the two, and the variables the code reads, in step).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pecmae_hub.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1]
# the example clips: inside the installed package (the wheel ships them), else the repository's examples/
EXAMPLES_DIR = next(
    (p for p in (PACKAGE / "examples", PACKAGE.parent / "examples") if p.is_dir()), PACKAGE.parent / "examples"
)
DEFAULT_MODEL = "gm-solos"
DEFAULT_MAX_SECONDS = 600.0
TOP_PROTOTYPES = 3  # prototypes shown (with audio) next to a prediction
NEAREST_PLAYERS = 2  # nearest training chunks played per top prototype (models ship 2: nearest/)
CLASSIFY_CONCURRENCY = 2  # simultaneous classifications
SONIFY_CONCURRENCY = 1  # simultaneous diffusion decodes
SONIFY_GPU_SECONDS = 120  # ZeroGPU time slot asked for one re-sonification
CLASSIFY_GPU_SECONDS = 60  # ZeroGPU time slot asked for one classification (10 min of audio)
DEFAULT_MAX_UPLOAD_MB = 128.0  # 10 min of 44.1 kHz stereo 16-bit WAV is ~106 MB
DEFAULT_FILE_TTL = 3600.0  # uploads (bare /gradio_api/upload calls too) and result files live this long
MAX_CONCURRENT_LOADS = 2  # models loaded (read, downloaded) at once; models in memory never wait for them
# silence: pecmae_hub.audio.is_silent / SILENCE_DBFS, the one definition shared with the library and CLI


def _float_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"${name} must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"${name} must be a positive number, got {text!r}")
    return value


def _flag_env(name: str, default: bool) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    return text not in ("0", "false", "no", "off")


@dataclass
class AppSettings:
    """Everything the app needs to know about its environment (see the module docstring)."""

    model: str = DEFAULT_MODEL
    max_seconds: float = DEFAULT_MAX_SECONDS
    device: str = "auto"
    examples_dir: Path = field(default_factory=lambda: EXAMPLES_DIR)
    prewarm: bool = True
    top_prototypes: int = TOP_PROTOTYPES
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    file_ttl: float = DEFAULT_FILE_TTL
    allowed_models: str | tuple[str, ...] | None = None  # None: $PECMAE_ALLOWED_MODELS (see pecmae_hub.app.access)
    model_dirs: str | tuple[str, ...] | None = None  # None: $PECMAE_MODEL_DIRS

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes, as Gradio's ``launch(max_file_size=...)`` takes it."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def delete_cache(self) -> tuple[int, int]:
        """Gradio's ``Blocks(delete_cache=(frequency, age))``: every ``frequency`` seconds, the files of this app
        older than ``file_ttl`` (uploads, bare ``/gradio_api/upload`` calls included, and result files) are
        deleted, so a file lives at most ``file_ttl`` + ``frequency`` seconds (``frequency`` = a quarter of the
        lifetime, 1 s to 10 min)."""
        age = max(1, round(self.file_ttl))
        return max(1, min(600, age // 4)), age

    @classmethod
    def from_env(cls, **overrides) -> AppSettings:
        """Settings from ``PECMAE_*`` variables; keyword arguments that are not None win."""
        values = dict(
            model=os.environ.get("PECMAE_MODEL", "").strip() or DEFAULT_MODEL,
            max_seconds=_float_env("PECMAE_MAX_SECONDS", DEFAULT_MAX_SECONDS),
            device=os.environ.get("PECMAE_DEVICE", "").strip() or "auto",
            examples_dir=Path(os.environ.get("PECMAE_EXAMPLES_DIR", "").strip() or EXAMPLES_DIR),
            prewarm=_flag_env("PECMAE_PREWARM", True),
            max_upload_mb=_float_env("PECMAE_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB),
            file_ttl=_float_env("PECMAE_FILE_TTL", DEFAULT_FILE_TTL),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("max_seconds", "max_upload_mb", "file_ttl"):
            try:
                ok = 0 < float(values[key]) < float("inf")
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"{key} must be a positive number, got {values[key]!r}")
        return cls(**values)

    def example_clips(self) -> list[Path]:
        """The example clips, sorted by name (empty when the folder is missing)."""
        folder = Path(self.examples_dir)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"))


def server_name() -> str:
    """``$GRADIO_SERVER_NAME`` or ``127.0.0.1`` (local only; Spaces sets ``0.0.0.0``)."""
    return os.environ.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1"


def server_port() -> int | None:
    """``$GRADIO_SERVER_PORT`` as an int, or None (Gradio then picks 7860 or the next free port)."""
    text = os.environ.get("GRADIO_SERVER_PORT", "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise ConfigError(f"$GRADIO_SERVER_PORT must be a port number (1-65535), got {text!r}")
    return int(text)


def format_seconds(seconds: float) -> str:
    """``75`` → ``1 min 15 s``; ``600`` → ``10 min``; ``3.5`` → ``3.5 s``."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" + (f" {rest} s" if rest else "")


def on_spaces() -> bool:
    """Whether the app runs on Hugging Face Spaces (the platform sets ``SPACE_ID``)."""
    return bool(os.environ.get("SPACE_ID", "").strip())


def reports_dir() -> Path:
    """``$PECMAE_REPORTS_DIR``: where "report a wrong prediction" writes (default ``.gradio/flagged``)."""
    return Path(os.environ.get("PECMAE_REPORTS_DIR", "").strip() or DEFAULT_REPORTS_DIR)


DEFAULT_REPORTS_DIR = ".gradio/flagged"  # Gradio's own flagging folder, relative to the working folder

#: every environment variable the app reads: (name, default, meaning)
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("PECMAE_MODEL", DEFAULT_MODEL, "model loaded at start: short name, Hub repo id or model folder"),
    ("PECMAE_MAX_SECONDS", f"{DEFAULT_MAX_SECONDS:g}", "longest audio accepted by /classify (seconds)"),
    ("PECMAE_MAX_UPLOAD_MB", f"{DEFAULT_MAX_UPLOAD_MB:g}", "largest upload (MB); larger ones are refused and deleted"),
    (
        "PECMAE_FILE_TTL",
        f"{DEFAULT_FILE_TTL:g}",
        "seconds an upload or a result file (sonified prototype, result download) is kept on the server",
    ),
    (
        "PECMAE_ALLOWED_MODELS",
        "embedded models",
        "what /load_model may load besides PECMAE_MODEL: comma-separated registry names, Hub repo ids, "
        "patterns (org/*), or registry (all registry names)",
    ),
    ("PECMAE_MODEL_DIRS", "none", "folders (os.pathsep-separated) whose model folders /load_model may load"),
    ("PECMAE_HUB_ORG", "pecmae-hub", "organisation of the registry names gtzan and medley-solos-db on the Hub"),
    ("PECMAE_DEVICE", "auto", "auto (CUDA when available), cpu or cuda"),
    ("PECMAE_EXAMPLES_DIR", "the shipped examples", "folder of example clips (.wav, .flac, .ogg, .mp3)"),
    ("PECMAE_PREWARM", "1", "classify the example clips in the background at start (instant examples)"),
    ("PECMAE_REPORTS_DIR", DEFAULT_REPORTS_DIR, 'where "report a wrong prediction" writes its CSV and clips'),
    ("GRADIO_SERVER_NAME", "127.0.0.1", "interface to bind (0.0.0.0 on Spaces and in Docker); pecmae app --host"),
    ("GRADIO_SERVER_PORT", "7860", "port; pecmae app --port"),
)
