"""Re-fit the out-of-domain scorer of the embedded gm-solos model, calibrated leave-one-bank-out.

    pecmae data gm-solos data/gm-solos --bank fluidr3 --bank musescore --bank csound --n-per-class 220 --seed 0
    pecmae extract data/gm-solos data/gm-solos-z --autoencoder checkpoints/gm-solos/autoencoder
    python scripts/calibrate_gm_solos_ood.py --data data/gm-solos --features data/gm-solos-z [--quantile 0.98]

The statistics (class means, shared covariance) come from every clip of the three training banks (the
recipe's clips: seed 0, indices 0-219). The thresholds come from leave-one-bank-out scores
(:func:`pecmae_hub.training.ood.calibrate_ood` with ``groups``): each bank is scored by a scorer fitted
on the other two only, and the threshold per clip length is the median over the banks of their
``--quantile`` (so a typical bank the scorer never saw keeps that fraction of its clips). Writes
``ood.safetensors`` + ``ood.json`` into the model folder and updates their two entries of its
``checksums.json`` (nothing else of the folder is touched), then prints the calibration.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUANTILE = 0.975
TRAIN_BANKS = ("fluidr3", "musescore", "csound")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="GM-Solos folder with metadata.csv")
    parser.add_argument("--features", type=Path, required=True, help="pecmae extract output for that folder")
    parser.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "gm-solos", help="model folder")
    parser.add_argument("--quantile", type=float, default=QUANTILE, help="kept share of a typical unseen bank")
    args = parser.parse_args(argv)

    import numpy as np

    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.models.ood import OOD_CONFIG_NAME, OOD_WEIGHTS_NAME
    from pecmae_hub.storage.atomic import atomic_write_text
    from pecmae_hub.storage.integrity import CHECKSUMS_NAME, sha256_file
    from pecmae_hub.training.features import FeatureSet
    from pecmae_hub.training.ood import calibrate_ood

    head = PrototypeHead.from_pretrained(args.model)
    with open(args.data / "metadata.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["bank"] in TRAIN_BANKS and r["seed"] == "0"]
    feats = [np.load(args.features / Path(r["path"]).with_suffix(".npy")) for r in rows]
    labels = [head.labels.index(r["label"]) for r in rows]
    banks = [r["bank"] for r in rows]
    indices = sorted({int(r["index"]) for r in rows})
    data = (
        f"gm-solos recipe clips rendered with render_clip(bank, label, index, seed=0), indices "
        f"{indices[0]}-{indices[-1]} of banks {', '.join(TRAIN_BANKS)}, all {len(head.labels)} classes: "
        f"{len(rows)} clips of 3 s (2 chunks each), z from the model's autoencoder; statistics from every clip, "
        "thresholds leave-one-bank-out (scripts/calibrate_gm_solos_ood.py)"
    )
    scorer = calibrate_ood(
        head,
        FeatureSet.from_arrays(feats, labels, label_names=head.labels),
        quantile=args.quantile,
        data=data,
        groups=banks,
    )
    scorer.save(args.model)
    manifest_path = args.model / CHECKSUMS_NAME
    manifest = json.loads(manifest_path.read_text())
    for name in (OOD_WEIGHTS_NAME, OOD_CONFIG_NAME):
        manifest["files"][name] = {"sha256": sha256_file(args.model / name), "size": (args.model / name).stat().st_size}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    cal = scorer.calibration
    print(f"thresholds per length (chunks 1..): {[round(t, 4) for t in scorer.thresholds]}")
    print(f"held out: {cal['held_out']}; kept per bank when unseen: {cal['kept_per_group']}")
    print(f"wrote {args.model / OOD_WEIGHTS_NAME}, {args.model / OOD_CONFIG_NAME} and their checksums")
    return 0


if __name__ == "__main__":
    sys.exit(main())
