"""PECMAE Hub: interpretable prototype-based music audio classification.

Public API (imported lazily so ``import pecmae_hub`` stays cheap)::

    from pecmae_hub import PECMAE, Autoencoder, AutoencoderConfig, PrototypeHead, MelVocoder
"""

from importlib import import_module

from pecmae_hub.errors import (
    AudioError,
    CheckpointError,
    ConfigError,
    DatasetError,
    InputShapeError,
    ModelNotFoundError,
    PecmaeError,
)

__version__ = "0.1.0"

_LAZY = {
    "PECMAE": "pecmae_hub.pipeline",
    "Prediction": "pecmae_hub.prediction",
    "ClassificationFailure": "pecmae_hub.prediction",
    "Autoencoder": "pecmae_hub.models.autoencoder",
    "AutoencoderConfig": "pecmae_hub.models.autoencoder",
    "PrototypeHead": "pecmae_hub.models.head",
    "MelVocoder": "pecmae_hub.models.vocoder",
    "VocoderConfig": "pecmae_hub.models.vocoder",
    "load_audio": "pecmae_hub.audio",
}

__all__ = sorted(_LAZY) + [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "InputShapeError",
    "ModelNotFoundError",
    "PecmaeError",
    "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pecmae_hub' has no attribute {name!r}")
