"""The PECMAE prototype classifier head (upstream ``PrototypeNet``, docs/architecture.md §8.2) in our folder format.

Callers pass raw autoencoder embeddings ``z``; the head normalises them with the training statistics
stored in its config (x' = (x - mu) / (2 sigma), docs/architecture.md §9.1), measures the mean squared (``l2``) or
mean absolute (``l1``) distance to its P = C·K prototypes, turns distances into similarities
exp(-d) and maps them to class logits with a linear layer initialised to the one-hot
prototype -> class map. Prototype p belongs to class ``p // K``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pecmae_hub.configuration import AutoencoderRef, ModelConfig
from pecmae_hub.errors import ConfigError, DatasetError, InputShapeError
from pecmae_hub.models.modes import evaluating
from pecmae_hub.storage.pretrained import PretrainedMixin, resolve_file

DISTANCES = ("l2", "l1")
SUMMARIZERS = ("transformer", "none")
INITS = ("kmeans-centers", "kmeans-samples", "random")
NEAREST_NAME = "nearest.json"


def _make_summarizer(dim: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model=dim, nhead=1, dim_feedforward=2048, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)


def _dropout(x: torch.Tensor, p: float, training: bool, per_row: bool = False) -> torch.Tensor:
    """Inverted dropout like ``F.dropout`` (mask from ``rand >= p``: ~1.6x faster than bernoulli on CPU).

    ``per_row`` draws one mask value per row (the single attention weight of each prototype).
    """
    if not training or p <= 0:
        return x
    shape = (x.shape[0], 1) if per_row else x.shape
    keep = torch.rand(shape, device=x.device) >= p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


@dataclass
class PrototypeHeadConfig(ModelConfig):
    """The schema of a :class:`PrototypeHead` (stored as its ``config.json``).

    Args:
        labels: class names in id order (C of them).
        embedding_dim: D, the size of z.
        protos_per_class: K prototypes per class.
        distance: ``"l2"`` (mean squared difference over D) or ``"l1"`` (mean absolute difference).
        summarizer: ``"transformer"`` (1-layer, 1-head ``nn.TransformerEncoder`` applied to the
            prototypes only, as upstream) or ``"none"``.
        norm_mean, norm_std: scalar statistics of the training z (defaults give the identity map).
        autoencoder: the :class:`AutoencoderRef` naming the autoencoder that produced z.
        temperature: the logit temperature used in training; class scores are softmax(logits / temperature).
    """

    MODEL_TYPE: ClassVar[str] = "pecmae-prototype-head"
    VERSION: ClassVar[int] = 1
    OPTIONAL_IN_FILE: ClassVar[frozenset[str]] = frozenset({"autoencoder", "temperature"})

    labels: list[str]
    embedding_dim: int = 768
    protos_per_class: int = 5
    distance: str = "l2"
    summarizer: str = "transformer"
    norm_mean: float = 0.0
    norm_std: float = 0.5
    autoencoder: AutoencoderRef = field(default_factory=AutoencoderRef)
    temperature: float = 1.0

    def __post_init__(self):
        if isinstance(self.labels, str) or not self.labels:
            raise ConfigError("a PrototypeHead needs a non-empty list of class labels")
        self.labels = [str(x) for x in self.labels]
        if len(set(self.labels)) != len(self.labels):
            dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise ConfigError(f"class labels must be unique, repeated: {dup}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.summarizer not in SUMMARIZERS:
            raise ConfigError(f"summarizer must be one of {SUMMARIZERS}, got {self.summarizer!r}")
        self.protos_per_class, self.embedding_dim = int(self.protos_per_class), int(self.embedding_dim)
        if self.protos_per_class < 1 or self.embedding_dim < 1:
            raise ConfigError(
                f"protos_per_class and embedding_dim must be >= 1, got {self.protos_per_class}, {self.embedding_dim}"
            )
        self.norm_mean, self.norm_std = float(self.norm_mean), float(self.norm_std)
        if not self.norm_std > 0 or not np.isfinite(self.norm_mean):
            raise ConfigError(
                f"norm_std must be > 0 and norm_mean finite, got mean={self.norm_mean}, std={self.norm_std}"
            )
        self.temperature = float(self.temperature)
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        self.autoencoder = AutoencoderRef.from_dict(self.autoencoder)


class PrototypeHead(PretrainedMixin, nn.Module):
    """Prototype classifier over autoencoder embeddings.

    Build it from a :class:`PrototypeHeadConfig`, or from that config's fields directly:
    ``PrototypeHead(["jazz", "rock"], embedding_dim=768, protos_per_class=5)``.
    ``from_pretrained`` / ``save_pretrained`` come from :class:`~pecmae_hub.storage.pretrained.PretrainedMixin`.
    """

    config_class = PrototypeHeadConfig

    def __init__(self, *args: Any, config: PrototypeHeadConfig | None = None, **fields: Any):
        super().__init__()
        if args and isinstance(args[0], PrototypeHeadConfig):
            config, args = args[0], args[1:]
        if config is None:
            config = PrototypeHeadConfig(*args, **fields)
        elif args or fields:
            raise ConfigError("give PrototypeHead either a config or its fields, not both")
        self.config: PrototypeHeadConfig = config
        n_classes, k, dim = len(config.labels), config.protos_per_class, config.embedding_dim
        n_protos = n_classes * k
        self.protos = nn.Parameter(torch.randn(n_protos, 1, dim))
        self.linear = nn.Linear(n_protos, n_classes)
        with torch.no_grad():
            self.linear.weight.copy_(self.class_map())
        self.time_summarizer = _make_summarizer(dim) if config.summarizer == "transformer" else None

    # ---- description -------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def num_classes(self) -> int:
        return len(self.config.labels)

    @property
    def protos_per_class(self) -> int:
        return self.config.protos_per_class

    @property
    def num_prototypes(self) -> int:
        return self.num_classes * self.protos_per_class

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def class_map(self) -> torch.Tensor:
        """One-hot (C, P) map with ``[c, p] = 1`` when prototype p belongs to class c (p // K == c)."""
        p = torch.arange(self.num_prototypes)
        return (p[None, :] // self.protos_per_class == torch.arange(self.num_classes)[:, None]).float()

    def prototype_class(self, p: int) -> int:
        """Class id of prototype ``p``."""
        if not 0 <= p < self.num_prototypes:
            raise IndexError(f"prototype index {p} out of range 0..{self.num_prototypes - 1}")
        return p // self.protos_per_class

    def prototype_name(self, p: int) -> tuple[str, int]:
        """``(class label, k)`` of prototype ``p``: it is the k-th prototype of its class."""
        return self.labels[self.prototype_class(p)], p % self.protos_per_class

    # ---- computation -------------------------------------------------------------------------
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw z -> the normalised space the prototypes live in."""
        return (z - self.config.norm_mean) / (2.0 * self.config.norm_std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised space -> raw z (inverse of :meth:`normalize`)."""
        return x * (2.0 * self.config.norm_std) + self.config.norm_mean

    def _flat_input(self, z) -> torch.Tensor:
        z = torch.as_tensor(z)
        if z.ndim == 3 and z.shape[1] == 1:
            z = z[:, 0]
        if z.ndim != 2 or z.shape[1] != self.embedding_dim:
            raise InputShapeError(
                f"PrototypeHead expects z of shape (B, {self.embedding_dim}) or (B, 1, {self.embedding_dim}), "
                f"got {tuple(z.shape)}; the features must come from the autoencoder this head was trained on"
            )
        return z.to(device=self.protos.device, dtype=torch.float32)

    def _normalized_prototypes(self) -> torch.Tensor:
        """(P, D) prototypes after the summariser, in normalised space (dropout follows the module mode)."""
        p = self.protos.reshape(self.num_prototypes, self.embedding_dim)
        if self.time_summarizer is not None:
            p = self._summarize(p)
        return p.float()

    def _summarize(self, x: torch.Tensor) -> torch.Tensor:
        """``time_summarizer`` on prototypes that are sequences of length 1, computed directly.

        With one token the softmax weight is 1, so self-attention is ``out_proj(V x)``: the Q/K
        projections (2/3 of ``in_proj``) are skipped, a quarter of the layer's cost. Dropout sites
        and post-norm order are those of ``nn.TransformerEncoderLayer`` (docs/architecture.md §8.2); the attention
        dropout zeroes or rescales the single weight per prototype.
        """
        assert self.time_summarizer is not None  # only called when there is one
        layer = self.time_summarizer.layers[0]
        attn, dim, train = layer.self_attn, self.embedding_dim, self.training
        v = F.linear(x, attn.in_proj_weight[2 * dim :], attn.in_proj_bias[2 * dim :])
        v = _dropout(v, attn.dropout, train, per_row=True)
        h = layer.norm1(x + _dropout(attn.out_proj(v), layer.dropout1.p, train))
        ff = layer.linear2(_dropout(F.relu(layer.linear1(h)), layer.dropout.p, train))
        return layer.norm2(h + _dropout(ff, layer.dropout2.p, train))

    def _distances_normalized(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            p = self._normalized_prototypes()
            x = x.float()
            if self.config.distance == "l2":
                # mean((x-p)^2) = (|x|^2 - 2 x.p + |p|^2) / D without a (B, P, D) tensor
                sq = (x * x).sum(1, keepdim=True) + (p * p).sum(1)[None, :]
                d = torch.addmm(sq, x, p.t(), beta=1.0, alpha=-2.0).clamp_min(0.0)
            else:
                d = torch.cdist(x[None], p[None], p=1.0)[0]
            return d / self.embedding_dim

    def distances(self, z) -> torch.Tensor:
        """(B, P) distances between normalised ``z`` and the (summarised) prototypes."""
        return self._distances_normalized(self.normalize(self._flat_input(z)))

    def similarities(self, z) -> torch.Tensor:
        """(B, P) similarities exp(-d) of raw ``z`` to every prototype."""
        return torch.exp(-self.distances(z))

    def contributions(self, z) -> torch.Tensor:
        """(B, C, P) contribution of prototype p to the logit of class c: ``linear.weight[c, p] * s[b, p]``.

        Summing over P and adding ``linear.bias`` gives the logits.
        """
        return self.linear.weight[None, :, :] * self.similarities(z)[:, None, :]

    def forward(self, z, return_distances: bool = False):
        """Logits (B, C) for raw ``z`` of shape (B, D) or (B, 1, D); with ``return_distances`` also d (B, P)."""
        d = self.distances(z)
        logits = self.linear(torch.exp(-d))
        return (logits, d) if return_distances else logits

    @torch.no_grad()
    def effective_prototypes(self) -> torch.Tensor:
        """(P, D) prototypes as the classifier uses them, in **raw z space**, on CPU.

        The summariser runs in eval mode (no dropout); the module's train/eval mode is restored.
        These are what the decoder sonifies.
        """
        with evaluating(self):
            return self.denormalize(self._normalized_prototypes()).detach().cpu()

    # ---- initialisation ----------------------------------------------------------------------
    @torch.no_grad()
    def init_prototypes(self, z, y, method: str = "kmeans-centers", seed: int = 0) -> None:
        """Initialise ``protos`` from training embeddings (raw z (N, D), class ids y (N,)).

        ``kmeans-centers``: K k-means centers per class in normalised space, label-major (rows c·K …
        c·K+K-1 belong to class c); ``kmeans-samples``: the training sample nearest to each center;
        ``random``: N(0, 1). Seeded. The summariser (if any) then transforms them, as upstream.
        """
        if method not in INITS:
            raise ConfigError(f"prototype init must be one of {INITS}, got {method!r}")
        k, dim = self.protos_per_class, self.embedding_dim
        if method == "random":
            g = torch.Generator().manual_seed(seed)
            self.protos.copy_(torch.randn(self.num_prototypes, 1, dim, generator=g))
            return
        from sklearn.cluster import KMeans

        x = self.normalize(self._flat_input(z)).cpu().numpy().astype(np.float64)
        y = np.asarray(y)
        blocks = []
        for c, name in enumerate(self.labels):
            xc = x[y == c]
            if len(xc) < k:
                raise DatasetError(
                    f"class {name!r} has {len(xc)} training chunks but {k} prototypes per class need at least {k}; "
                    "lower protos_per_class or add data"
                )
            km = KMeans(n_clusters=k, n_init="auto", random_state=seed).fit(xc)
            centers = km.cluster_centers_
            if method == "kmeans-samples":
                from sklearn.metrics import pairwise_distances_argmin

                centers = xc[pairwise_distances_argmin(centers, xc)]
            blocks.append(centers)
        protos = np.concatenate(blocks, axis=0)  # label-major (fixes upstream np.hstack, docs/architecture.md §12.11)
        self.protos.copy_(torch.as_tensor(protos, dtype=torch.float32).reshape(self.num_prototypes, 1, dim))

    # ---- explanation table -------------------------------------------------------------------
    @staticmethod
    def load_nearest(name_or_path: str | os.PathLike, **kwargs) -> dict | None:
        """The ``nearest.json`` explanation table of a head folder/repo, or None when it has none."""
        path = resolve_file(name_or_path, NEAREST_NAME, required=False, **kwargs)
        return None if path is None else json.loads(Path(path).read_text())
