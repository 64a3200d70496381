"""Convert an upstream PECMAE ``PrototypeNet`` Lightning checkpoint into a :class:`PrototypeHead` folder.

The checkpoint holds ``protos`` (P, 1, D), ``linear.{weight,bias}`` and, with the transformer
summariser, ``time_summarizer.layers.0.*`` (spec §7.2), possibly under a ``model.`` prefix and next
to ``discriminator.*`` (dropped). It does not hold the label names nor the normalisation statistics
(upstream never saved them, §12.15/§12.26): they are given here, or the statistics are computed
from the training features with :func:`norm_stats_from_features`.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Sequence

import torch

from pecmae_hub.errors import CheckpointError, ConfigError, ModelNotFoundError
from pecmae_hub.serialization import load_state_dict_strict
from pecmae_hub.training.features import compute_norm_stats, load_features, parse_labels, read_split
from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.models.head import PrototypeHead

_SUMMARIZER_PREFIX = "time_summarizer."


def read_upstream_state(ckpt_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The PrototypeNet tensors of an upstream checkpoint, without unpickling code, prefix stripped."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ModelNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # garbage gives "Unsupported operand", objects "Unsupported global"
            raise CheckpointError(f"{path} is not a readable torch checkpoint: {str(exc).splitlines()[0]}") from None
        raise CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True): it needs arbitrary Python objects "
            f"to be unpickled, which pecmae refuses (it could run code). Re-save it as a plain state dict in "
            f"a trusted environment: ckpt = torch.load(path, weights_only=False); "
            f"torch.save({{'state_dict': ckpt['state_dict']}}, 'clean.ckpt')"
        ) from None
    except Exception as exc:  # torch raises KeyError/RuntimeError/EOFError... for files that are not checkpoints
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (expected a Lightning checkpoint or a state dict)")
    out = {}
    for key, value in state.items():
        key = key[len("model."):] if key.startswith("model.") else key
        if key.startswith("discriminator."):
            continue
        out[key] = value.detach().float()
    if "protos" not in out:
        raise CheckpointError(
            f"{path} has no 'protos' tensor: it is not a PECMAE PrototypeNet checkpoint (keys: {sorted(out)[:8]})"
        )
    return out


def convert_head(
    ckpt_path: str | os.PathLike,
    labels: str | Sequence[str],
    norm_mean: float,
    norm_std: float,
    out_dir: str | os.PathLike | None,
    protos_per_class: int | None = None,
    summarizer: str | None = None,
    distance: str = "l2",
    autoencoder: AutoencoderRef | None = None,
) -> PrototypeHead:
    """Convert an upstream checkpoint; writes the head folder to ``out_dir`` (if given) and returns it.

    ``labels`` are the class names in upstream id order (a list, a comma string or a file).
    K = P / C and the summariser are inferred from the tensors; passing them checks the inference.
    ``distance`` is the upstream ``--proto-loss`` (not stored in the checkpoint). The head gives the
    upstream logits for the normalised z; it normalises raw z itself with ``norm_mean``/``norm_std``.
    """
    labels = parse_labels(labels)
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


def norm_stats_from_features(features_dir: str | os.PathLike, split: str | os.PathLike) -> tuple[float, float]:
    """Recompute the upstream scalar normalisation statistics from the training split's feature files."""
    # the label order is irrelevant for the statistics: take the split's own first-seen order
    labels = list(dict.fromkeys(label for label, _ in read_split(split)))
    return compute_norm_stats(load_features(features_dir, split, label_names=labels).chunks()[0])
