"""Shared fixtures: a local Hub over real HTTP, an isolated Hugging Face cache, tiny PECMAE models, audio files.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported, so
they are set here, at conftest import time, before any test module imports it. The Hub server port
is chosen now and the server is bound to it later (session fixture ``hub_server``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HUB_PORT = _free_port()
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"
_HF_HOME = tempfile.mkdtemp(prefix="pecmae-tests-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ.update(
    {
        "HF_ENDPOINT": HUB_URL,
        "HF_HOME": _HF_HOME,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
)
# tiny models on 2 shared cores: one intra-op thread is ~30x faster than two under load
os.environ.setdefault("OMP_NUM_THREADS", "1")
for _var in (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "PECMAE_HUB_ORG",
):
    os.environ.pop(_var, None)
if "huggingface_hub" in sys.modules:  # imported by a plugin before us: patch what it already read
    from huggingface_hub import constants as _hf_constants

    _hf_constants.ENDPOINT, _hf_constants.HF_HUB_OFFLINE = HUB_URL, False

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

LABELS = ("violin", "piano", "flute")


@pytest.fixture(scope="session")
def hub_server():
    server = HubServer(port=HUB_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server):
    """The local Hub, empty, running, with a fresh request log (and no remembered reachability probe)."""
    from pecmae_hub.storage.connectivity import clear_probe_cache

    hub_server.start()
    hub_server.reset()
    clear_probe_cache()
    yield hub_server
    hub_server.start()  # a test may have stopped it
    clear_probe_cache()  # ... and left "unreachable" in the probe cache


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path, monkeypatch):
    """Each test gets its own HF cache, online mode, and no autoencoder cached in-process."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    if "pecmae_hub.hub.files" in sys.modules:
        sys.modules["pecmae_hub.hub.files"].clear_cache()
    yield cache
    if "pecmae_hub.hub.files" in sys.modules:
        sys.modules["pecmae_hub.hub.files"].clear_cache()


def tiny_autoencoder(seed: int = 0):
    """The tiny random mel autoencoder (1 s chunks, 32-d z, 4 Griffin-Lim iterations)."""
    import torch

    from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

    torch.manual_seed(seed)
    return Autoencoder(AutoencoderConfig.tiny(mel={"n_fft": 512, "griffin_lim_iters": 4}))


def tiny_pecmae(seed: int = 0, ae_seed: int = 0, labels=LABELS, k: int = 2, autoencoder=None):
    """A tiny PECMAE: random head (seeded) on the tiny autoencoder; the class map is perturbed so that
    prototypes of other classes contribute too."""
    import torch

    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.pipeline import PECMAE

    ae = autoencoder if autoencoder is not None else tiny_autoencoder(ae_seed)
    torch.manual_seed(1000 + seed)
    head = PrototypeHead(list(labels), embedding_dim=ae.embedding_dim, protos_per_class=k, norm_mean=0.0, norm_std=0.5)
    with torch.no_grad():
        head.protos.mul_(0.5)
        head.linear.weight.add_(0.5 * torch.randn_like(head.linear.weight))
        head.linear.bias.copy_(0.1 * torch.randn_like(head.linear.bias))
    return PECMAE(ae, head, name=f"tiny-{seed}", info={"dataset": "tiny-set", "split": "test fold"})


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory):
    """Factory: ``make_tiny_model(seed=0, render=False, nearest=False, metrics=None) -> folder``."""

    def make(
        seed: int = 0,
        render: bool = False,
        nearest: bool = False,
        metrics: dict | None = None,
        folder: Path | None = None,
    ) -> Path:
        from pecmae_hub.training.nearest import nearest_training_chunks

        model = tiny_pecmae(seed)
        if nearest:
            import numpy as np

            rng = np.random.default_rng(seed)
            feats = [
                model.autoencoder.encode(rng.standard_normal(24000 * 2).astype("float32") * 0.1, sr=24000).numpy()
                for _ in range(3)
            ]
            model.nearest = nearest_training_chunks(model.head, feats, ["a.wav", "b.wav", "c.wav"], k=2)
        model.metrics = metrics
        folder = folder or tmp_path_factory.mktemp(f"tiny-{seed}")
        return model.save_pretrained(folder, render=render, steps=2, guidance=1.0, seed=0)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_tiny_model) -> Path:
    """A saved tiny model with nearest.json, metrics.json and prototypes pre-rendered at steps=2."""
    return make_tiny_model(seed=0, render=True, nearest=True, metrics={"split": "test fold", "accuracy": 0.5})


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory) -> dict[str, Path]:
    """``wav`` (22.05 kHz stereo 2.5 s), ``flac`` (48 kHz 1.5 s), ``ogg`` (44.1 kHz 1.2 s) and ``corrupt``."""
    import numpy as np
    import soundfile as sf

    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)

    def tone(sr, seconds, freq, channels=1):
        t = np.arange(int(sr * seconds)) / sr
        x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
        return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x

    files = {"wav": folder / "a_tone.wav", "flac": folder / "b_tone.flac", "ogg": folder / "c_tone.ogg"}
    sf.write(files["wav"], tone(22050, 2.5, 440, channels=2), 22050)
    sf.write(files["flac"], tone(48000, 1.5, 660), 48000)
    sf.write(files["ogg"], tone(44100, 1.2, 330), 44100, format="OGG", subtype="VORBIS")
    files["corrupt"] = folder / "d_corrupt.wav"
    files["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
    return files


@pytest.fixture
def one_thread():
    """Tiny models run fastest single-threaded, above all on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
