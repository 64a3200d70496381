"""Sonification samplers: speed and fidelity of every scheduler × steps against an exact reference.

For each setting (``scheduler:steps``) and prototype, the prototype is decoded exactly as
``PECMAE.sonify`` does (one prototype per call, noise ``randn`` seeded like ``PECMAE._decode``) and compared
with the exact sampler at ``--ref-steps`` (default 200) from the same noise:
- ``s_per_proto``: median wall seconds per prototype, decoder + vocoder (``latent_s``: decoder alone;
  ``cpu_s``: process CPU seconds, steadier than wall time on a shared machine with ``--threads 1``);
- ``logmel_db``: mean |Δ| of the rendered audio's log-mel spectrogram (dB, 64 bands) against the reference's;
- ``latent_rel_l2``: ‖x − x_ref‖ / ‖x_ref‖ of the decoder output (mel frames / EnCodec latents), mean over prototypes;
- ``reclass`` (shipped model only): fraction of sonified prototypes (clipped to [-1, 1] as the written WAVs)
  that the same model classifies as their own class.
Settings run interleaved per prototype so that load from other processes spreads evenly over them.

Two models: the shipped ``--model`` (default gm-solos, all prototypes) and, unless ``--no-upstream``,
the upstream-size architecture (``AutoencoderConfig.upstream()``, random weights: speed is what counts
there; ``--upstream-ref-steps 0`` skips its slow reference). ``chosen`` is the fastest setting whose
log-mel distance and latent rel. L2 are no larger and re-classification no lower (up to one paired standard
error, see ``reclass_ok``) than the exact ``--baseline`` (upstream:40) (a second ``chosen`` line with
``bars: "MR"`` when dropping the latent bar changes it);
``speedup`` is the baseline's time over the chosen one, measured in this run (``speedup_decoder_only``:
without the vocoder).

Usage: python bench/sonify.py [--quick] [--seeds 0,1,2] [--no-upstream] [--threads 1]
Prints one JSON object per row, then a table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

DEFAULT_SETTINGS = (
    "upstream:40,upstream:20,ddim:20,dpmsolver++:16,dpmsolver++:20,dpmsolver++:25,"
    "unipc:8,unipc:10,unipc:12,unipc:14,unipc:16,unipc:20"
)
QUICK_SETTINGS = "upstream:40,dpmsolver++:20,unipc:10,unipc:16,unipc:20"
DB_PER_NEPER = 10 / math.log(10)


def parse_settings(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, steps = item.strip().rpartition(":")
        out.append((name, int(steps)))
    return out


def label(setting: tuple[str, int]) -> str:
    return f"{setting[0]}:{setting[1]}"


class LogMel:
    """Log-mel analysis of rendered audio (64 bands, our front end), in dB."""

    def __init__(self):
        from pecmae_hub.models.melspec import MelCodec

        self.codec = MelCodec(n_mels=64)

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            feats = self.codec.encode(torch.as_tensor(wav, dtype=torch.float32)[None])[0]
        return feats * self.codec.scale * DB_PER_NEPER


def render(ae, z, noise, scheduler: str, steps: int, guidance: float):
    """(latents, audio, latent s, total s, total CPU s) of one prototype, as ``Autoencoder.decode``."""
    c0, t0 = time.process_time(), time.perf_counter()
    latents = ae.decode_latents(z, steps, guidance, noise=noise, scheduler=scheduler)
    t1 = time.perf_counter()
    with torch.inference_mode():
        wav = ae.codec.decode(latents)[:, : ae.chunk_samples].float().cpu().numpy()[0]
    return latents, wav, t1 - t0, time.perf_counter() - t0, time.process_time() - c0


def run_model(title, ae, zs, labels, settings, ref_steps, seeds, guidance, classify=None, log=print):
    """Benchmark ``settings`` on prototypes ``zs`` (P, D); returns one summary dict per setting."""
    mel = LogMel()
    shape = (1, ae.chunk_frames, ae.config.signal_dim)
    for name in sorted({s for s, _ in settings}):  # warm-up: imports, caches, first-call allocations
        render(ae, zs[:1], torch.zeros(shape), name, 2, guidance)
    keys = ("latent_s", "total_s", "cpu_s", "rel_l2", "db", "hits")
    rows = {label(s): {k: [] for k in keys} for s in settings}
    ref_hits = []
    for seed in seeds:
        for p in range(zs.shape[0]):
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))
            ref = None
            if ref_steps:
                ref_lat, ref_wav, *_ = render(ae, zs[p : p + 1], noise, "upstream", ref_steps, guidance)
                ref = (ref_lat, mel(ref_wav))
                if classify is not None:
                    ref_hits.append(classify(ref_wav) == labels[p])
            for setting in settings:
                lat, wav, lat_s, tot_s, cpu_s = render(ae, zs[p : p + 1], noise, *setting, guidance)
                row = rows[label(setting)]
                row["cpu_s"].append(cpu_s)
                row["latent_s"].append(lat_s)
                row["total_s"].append(tot_s)
                if ref is not None:
                    row["rel_l2"].append(float((lat - ref[0]).norm() / ref[0].norm()))
                    row["db"].append(float((mel(wav) - ref[1]).abs().mean()))
                if classify is not None:
                    row["hits"].append(classify(wav) == labels[p])
            log(f"# {title}: seed {seed} prototype {p + 1}/{zs.shape[0]} done")
    out = []
    for setting in settings:
        row = rows[label(setting)]
        out.append(
            {
                "model": title,
                "setting": label(setting),
                "scheduler": setting[0],
                "steps": setting[1],
                "s_per_proto": statistics.median(row["total_s"]),
                "latent_s": statistics.median(row["latent_s"]),
                "cpu_s": statistics.median(row["cpu_s"]),
                "logmel_db": statistics.fmean(row["db"]) if row["db"] else None,
                "latent_rel_l2": statistics.fmean(row["rel_l2"]) if row["rel_l2"] else None,
                "reclass": statistics.fmean(row["hits"]) if row["hits"] else None,
                "n": len(row["total_s"]),
                "ref_steps": ref_steps,
                "_hits": row["hits"],
            }
        )
    if ref_hits:
        out.append(
            {
                "model": title,
                "setting": f"upstream:{ref_steps} (reference)",
                "reclass": statistics.fmean(ref_hits),
                "n": len(ref_hits),
            }
        )
    return out


def reclass_ok(row, base) -> bool:
    """Re-classification no lower than the baseline's, up to one paired standard error.

    Both are scored on the same renders (prototype × seed); a setting fails when it misses more of them than
    the baseline by over √(renders on which exactly one of the two is right). Single renders flip the strict
    comparison: the exact 200-step reference itself can score below the 40-step sampler.
    """
    if not base.get("_hits"):
        return True
    a, b = base["_hits"], row.get("_hits") or []
    discordant = sum(x != y for x, y in zip(a, b))
    return sum(a) - sum(b) <= math.sqrt(discordant)


def passes(row, base) -> str:
    """Which fidelity bars of ``base`` a row meets: M (log-mel ≤), R (re-classification ≥, see
    :func:`reclass_ok`), L (latent rel. L2 ≤)."""
    if base is None or row.get("logmel_db") is None or base.get("logmel_db") is None:
        return ""
    flags = "M" if row["logmel_db"] <= base["logmel_db"] else "-"
    flags += "R" if reclass_ok(row, base) else "-"
    return flags + ("L" if row["latent_rel_l2"] <= base["latent_rel_l2"] else "-")


def choose(rows, baseline: str, bars: str = "MRL"):
    """The fastest setting at least as faithful as ``baseline`` on every bar in ``bars`` (see :func:`passes`)."""
    base = next((r for r in rows if r["setting"] == baseline), None)
    ok = [
        r
        for r in rows
        if r.get("s_per_proto") is not None and r["setting"] != baseline and all(b in passes(r, base) for b in bars)
    ]
    return (min(ok, key=lambda r: r["s_per_proto"]) if ok else None), base


def fmt(value, spec):
    return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)


def print_table(rows, baseline: str):
    print(
        f"{'model':<14} {'setting':<26} {'s/proto':>8} {'latent s':>9} {'cpu s':>7} {'log-mel dB':>10} {'rel L2':>8} "
        f"{'reclass':>8} {'vs base':>8}"
    )
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["setting"] == baseline), None)
        print(
            f"{r['model']:<14} {r['setting']:<26} {fmt(r.get('s_per_proto'), '8.3f')} "
            f"{fmt(r.get('latent_s'), '9.3f')} {fmt(r.get('cpu_s'), '7.3f')} "
            f"{fmt(r.get('logmel_db'), '10.3f')} {fmt(r.get('latent_rel_l2'), '8.4f')} "
            f"{fmt(r.get('reclass'), '8.3f')} "
            f"{passes(r, base) if r is not base else 'base':>8}"
        )


def emit(obj):
    print(
        json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in obj.items() if not k.startswith("_")}),
        flush=True,
    )


def speed_line(model, chosen, base, bars="MRL"):
    if chosen is None or base is None:
        return {
            "metric": "chosen",
            "model": model,
            "setting": None,
            "bars": bars,
            "note": "no setting met the baseline's fidelity (or no reference was computed)",
        }
    return {
        "metric": "chosen",
        "model": model,
        "bars": bars,
        "setting": chosen["setting"],
        "baseline": base["setting"],
        "speedup": base["s_per_proto"] / chosen["s_per_proto"],
        "speedup_decoder_only": base["latent_s"] / chosen["latent_s"],
        "speedup_cpu_time": base["cpu_s"] / chosen["cpu_s"],
        "target": ">= 2.5",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gm-solos")
    parser.add_argument("--settings", default=None, help=f"scheduler:steps,... (default {DEFAULT_SETTINGS})")
    parser.add_argument("--baseline", default="upstream:40")
    parser.add_argument("--ref-steps", type=int, default=200, help="exact reference steps (0: no fidelity figures)")
    parser.add_argument("--prototypes", type=int, default=0, help="first N prototypes of the shipped model (0: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated noise seeds")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave as is)")
    parser.add_argument("--no-upstream", action="store_true", help="skip the upstream-size architecture")
    parser.add_argument(
        "--no-shipped", action="store_true", help="skip the shipped model (then give --upstream-settings)"
    )
    parser.add_argument(
        "--upstream-settings",
        default=None,
        help="settings for the upstream-size model (default: the baseline and the chosen one)",
    )
    parser.add_argument("--upstream-prototypes", type=int, default=1)
    parser.add_argument("--upstream-ref-steps", type=int, default=200)
    parser.add_argument(
        "--quick", action="store_true", help=f"6 prototypes, settings {QUICK_SETTINGS}, upstream-size model speed only"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = parse_settings(args.settings or (QUICK_SETTINGS if args.quick else DEFAULT_SETTINGS))
    if args.baseline not in {label(s) for s in settings}:
        settings.insert(0, parse_settings(args.baseline)[0])
    n_protos = args.prototypes or (6 if args.quick else 0)
    seeds = [int(s) for s in args.seeds.split(",")]

    from pecmae_hub import PECMAE
    from pecmae_hub.audio import SAMPLE_RATE

    model = PECMAE.from_pretrained(args.model, device="cpu")
    zs = model.head.effective_prototypes().detach().float().cpu()
    if n_protos:
        # spread over the classes: prototype k of class c is index c·K + k
        order = [
            c * model.head.protos_per_class + k
            for k in range(model.head.protos_per_class)
            for c in range(len(model.labels))
        ]
        zs_index = order[:n_protos]
    else:
        zs_index = list(range(zs.shape[0]))
    labels = [model.head.prototype_name(p)[0] for p in zs_index]

    def classify(wav):  # what a listener gets: sonify's WAVs are written clipped to [-1, 1]
        return model.classify(np.clip(wav, -1.0, 1.0), sr=SAMPLE_RATE).label

    chosen = loose = None
    all_rows = []
    if not args.no_shipped:
        rows = run_model(
            args.model,
            model.autoencoder,
            zs[zs_index],
            labels,
            settings,
            args.ref_steps,
            seeds,
            args.guidance,
            classify=classify,
        )
        for r in rows:
            emit(r)
        chosen, base = choose(rows, args.baseline)
        emit(speed_line(args.model, chosen, base))
        loose, _ = choose(rows, args.baseline, bars="MR")  # the issue's bars: log-mel and re-classification only
        if loose is not chosen:
            emit(speed_line(args.model, loose, base, bars="MR"))
        all_rows = list(rows)

    if not args.no_upstream:
        from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig

        torch.manual_seed(0)
        big = Autoencoder(AutoencoderConfig.upstream())
        picked = [r["setting"] for r in (chosen, loose) if r is not None]
        big_settings = parse_settings(args.upstream_settings or ",".join(dict.fromkeys([args.baseline, *picked])))
        z_big = torch.randn(args.upstream_prototypes, big.embedding_dim, generator=torch.Generator().manual_seed(1))
        ref_steps = 0 if args.quick else args.upstream_ref_steps
        big_rows = run_model("upstream-size", big, z_big, None, big_settings, ref_steps, seeds[:1], args.guidance)
        for r in big_rows:
            emit(r)
        big_base = next((r for r in big_rows if r["setting"] == args.baseline), None)
        for pick, bars in ((chosen, "MRL"), (loose, "MR")):
            if pick is not None and (bars == "MRL" or loose is not chosen):
                emit(
                    speed_line(
                        "upstream-size",
                        next((r for r in big_rows if r["setting"] == pick["setting"]), None),
                        big_base,
                        bars,
                    )
                )
        others = [r for r in big_rows if r["setting"] not in (args.baseline, *picked) and r.get("s_per_proto")]
        for row in others:  # --upstream-settings: the speed-up of every other setting
            emit({**speed_line("upstream-size", row, big_base, ""), "metric": "speedup"})
        all_rows += big_rows

    print()
    print_table(all_rows, args.baseline)


if __name__ == "__main__":
    main()
