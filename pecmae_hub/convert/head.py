"""Convert an upstream PECMAE ``PrototypeNet`` Lightning checkpoint into a :class:`PrototypeHead` folder.

The checkpoint holds ``protos`` (P, 1, D), ``linear.{weight,bias}`` and, with the transformer
summariser, ``time_summarizer.layers.0.*`` (docs/architecture.md §8.2), possibly under a ``model.`` prefix and next
to ``discriminator.*`` (dropped). It does not hold the label names nor the normalisation statistics
(upstream never saved them, docs/architecture.md §12.12, §12.19): they are given here, or the statistics are computed
from the training features with :func:`pecmae_hub.training.features.norm_stats_from_split`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.convert.checkpoint_io import read_state_dict
from pecmae_hub.errors import CheckpointError, ConfigError
from pecmae_hub.models.head import PrototypeHead
from pecmae_hub.storage.pretrained import load_state_dict_strict

_SUMMARIZER_PREFIX = "time_summarizer."


def read_upstream_state(ckpt_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The PrototypeNet tensors of an upstream checkpoint, ``model.`` prefix stripped, ``discriminator.*`` dropped.

    Read by :func:`~pecmae_hub.convert.checkpoint_io.read_state_dict`: nothing is unpickled.
    """
    state, _ = read_state_dict(ckpt_path, "PrototypeNet checkpoint")
    out = {}
    for key, value in state.items():
        key = key[len("model.") :] if key.startswith("model.") else key
        if not key.startswith("discriminator."):
            out[key] = value.float()
    if "protos" not in out:
        raise CheckpointError(
            f"{ckpt_path} has no 'protos' tensor: it is not a PECMAE PrototypeNet checkpoint (keys: {sorted(out)[:8]})"
        )
    return out


def convert_head(
    ckpt_path: str | os.PathLike,
    labels: Sequence[str],
    norm_mean: float,
    norm_std: float,
    out_dir: str | os.PathLike | None,
    protos_per_class: int | None = None,
    summarizer: str | None = None,
    distance: str = "l2",
    autoencoder: AutoencoderRef | None = None,
) -> PrototypeHead:
    """Convert an upstream checkpoint; writes the head folder to ``out_dir`` (if given) and returns it.

    ``labels`` are the class names in upstream id order, as a list (a comma list or a ``labels.txt``
    is parsed by :func:`pecmae_hub.data.split_files.parse_labels`, as ``pecmae convert --labels`` does).
    K = P / C and the summariser are inferred from the tensors; passing them checks the inference.
    ``distance`` is the upstream ``--proto-loss`` (not stored in the checkpoint). The head gives the
    upstream logits for the normalised z; it normalises raw z itself with ``norm_mean``/``norm_std``.
    """
    if isinstance(labels, (str, os.PathLike)):
        raise ConfigError(
            f"labels must be a list of class names, got {labels!r}; read a comma list or a labels file with "
            "pecmae_hub.data.split_files.parse_labels"
        )
    labels = [str(label) for label in labels]
    state = read_upstream_state(ckpt_path)
    protos = state["protos"]
    if protos.ndim == 2:
        protos = state["protos"] = protos[:, None, :]
    if protos.ndim != 3 or protos.shape[1] != 1:
        raise CheckpointError(
            f"protos has shape {tuple(protos.shape)}; only prototypes of one time step (P, 1, D) "
            "are supported (upstream --timestamps 1)"
        )
    n_protos, dim = protos.shape[0], protos.shape[2]
    n_classes = len(labels)
    lin = state.get("linear.weight")
    if lin is not None and lin.shape[0] != n_classes:
        raise ConfigError(f"the checkpoint has {lin.shape[0]} classes but {n_classes} labels were given: {labels}")
    if n_protos % n_classes:
        raise ConfigError(f"{n_protos} prototypes cannot be split evenly over {n_classes} classes")
    k = n_protos // n_classes
    if protos_per_class is not None and int(protos_per_class) != k:
        raise ConfigError(
            f"protos_per_class={protos_per_class} given, but the checkpoint has {n_protos} prototypes "
            f"for {n_classes} classes (K={k})"
        )
    summ_keys = [key for key in state if key.startswith(_SUMMARIZER_PREFIX)]
    if summ_keys and not all(key.startswith(_SUMMARIZER_PREFIX + "layers.0.") for key in summ_keys):
        raise CheckpointError(
            f"unsupported time summariser (keys like {summ_keys[0]}): only 'transformer' and 'none' can be converted"
        )
    found = "transformer" if summ_keys else "none"
    if summarizer is not None and summarizer != found:
        raise ConfigError(f"summarizer={summarizer!r} given, but the checkpoint's tensors say {found!r}")
    head = PrototypeHead(labels, dim, k, distance, found, norm_mean, norm_std, autoencoder)
    load_state_dict_strict(head, state, str(ckpt_path))
    head.eval()
    if out_dir is not None:
        head.save_pretrained(out_dir)
    return head
