"""The APNet-style explanation table: for every prototype, the training chunks closest to it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pecmae_hub.models.head import NEAREST_NAME, PrototypeHead
from pecmae_hub.models.modes import evaluating
from pecmae_hub.storage.atomic import atomic_write_text


@torch.no_grad()
def nearest_training_chunks(
    head: PrototypeHead, features: Sequence[np.ndarray], track_ids: Sequence[str], k: int = 5, batch_size: int = 8192
) -> dict:
    """For every prototype, the ``k`` training chunks closest to it (APNet-style explanation).

    ``features[i]`` is the (n_chunks, D) raw z of track ``track_ids[i]``. Returns the ``nearest.json``
    structure: ``{"k", "distance", "prototypes": [{"index", "label", "k", "nearest": [{"track",
    "chunk", "distance"}]}]}``; distances are the head's (normalised-space) distances.
    """
    with evaluating(head):
        owner = np.concatenate([np.full(len(f), i) for i, f in enumerate(features)])
        chunk = np.concatenate([np.arange(len(f)) for f in features])
        flat = np.concatenate([np.asarray(f, dtype=np.float32).reshape(len(f), -1) for f in features])
        d = torch.cat(
            [head.distances(torch.from_numpy(flat[s : s + batch_size])).cpu() for s in range(0, len(flat), batch_size)]
        )
        kk = min(k, len(flat))
        dist, idx = torch.topk(d, kk, dim=0, largest=False)  # (kk, P)
    protos = []
    for p in range(head.num_prototypes):
        label, j = head.prototype_name(p)
        rows = [
            {"track": str(track_ids[owner[i]]), "chunk": int(chunk[i]), "distance": float(dv)}
            for i, dv in zip(idx[:, p].tolist(), dist[:, p].tolist())
        ]
        protos.append({"index": p, "label": label, "k": j, "nearest": rows})
    return {"k": kk, "distance": head.config.distance, "prototypes": protos}


def save_nearest(table: dict, folder: str | os.PathLike) -> Path:
    """Write a :func:`nearest_training_chunks` table as ``nearest.json`` in ``folder``."""
    return atomic_write_text(Path(folder) / NEAREST_NAME, json.dumps(table, indent=1) + "\n")
