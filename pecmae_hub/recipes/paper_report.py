"""What the paper recipes say: the data summary, ours-vs-paper figures, the model card info and the final report.

Published figures: :data:`PAPER_RESULTS` holds the paper's numbers that the project has verified
against the paper itself, keyed by ``(dataset, K)``, each with the table it comes from. It is empty:
docs/architecture.md quotes no figure (the paper's tables are not in this repository, and the abstract
gives none), and no number is put here from memory. The report and the card print the paper column
whenever an entry exists, and say plainly that none is recorded otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

#: (dataset, protos_per_class) -> {"accuracy": float, ..., "source": "arXiv 2402.09318, Table N"}
PAPER_RESULTS: dict[tuple[str, int], dict] = {}
_NO_PAPER = (
    "paper: no published figure is recorded in this repository for this setting (docs/architecture.md "
    "quotes none; add verified ones to pecmae_hub.recipes.paper_report.PAPER_RESULTS)"
)


def paper_results(dataset: str, k: int) -> dict:
    """The verified published figures for ``dataset`` with K prototypes per class (may be empty)."""
    return dict(PAPER_RESULTS.get((dataset, int(k)), {}))


def data_lines(cfg, summary: dict) -> str:
    """The data stage's report: source, tracks per split, what the split left out."""
    t = summary["tracks"]
    lines = [f"data: {cfg.spec.title} from {summary['source']} ({summary['root']})"]
    if cfg.dataset == "gtzan":
        kept, missing = summary["kept_total"], summary["missing"]
        lines.append(
            f"data: paper split: {kept - len(missing)} of its {kept} tracks present -> "
            f"{t['train']} train / {t['val']} val / {t['test']} test (the paper: 731 / 96 / 91)"
        )
        if missing:
            lines.append(
                f"data: {len(missing)} kept tracks are missing, e.g. {', '.join(missing[:5])}; the numbers "
                "of this run are not comparable with the paper's"
            )
        if summary["excluded"]:
            corrupt = summary.get("known_corrupt_excluded") or []
            note = f", among them {', '.join(corrupt)} (known to be undecodable in GTZAN)" if corrupt else ""
            lines.append(
                f"data: {len(summary['excluded'])} file(s) present but excluded by the paper split, not decoded{note}"
            )
    else:
        lines.append(f"data: official split: {t['train']} train / {t['val']} val / {t['test']} test clips")
    return "\n".join(lines)


def comparison_lines(cfg, k: int, evaluation: dict) -> str:
    """Ours (test split) beside the paper's published figures, where the paper gives them."""
    test = evaluation["test"]
    ours = {
        "accuracy": test["prototype"]["accuracy"],
        "macro_f1": test["prototype"]["macro_f1"],
        "linear_probe_accuracy": (test.get("linear_probe") or {}).get("accuracy"),
        "mlp_accuracy": (test.get("mlp") or {}).get("accuracy"),
    }
    paper = paper_results(cfg.dataset, k)
    lines = [f"{'test split':<24}{'ours':>10}{'paper':>10}"]
    for key, value in ours.items():
        theirs = paper.get(key)
        lines.append(
            f"{key:<24}{'–' if value is None else f'{value:.4f}':>10}{'–' if theirs is None else f'{theirs:.4f}':>10}"
        )
    lines.append(f"paper: {paper['source']}" if paper else _NO_PAPER)
    return "\n".join(lines)


def split_text(cfg, state: dict) -> str:
    """One sentence on the split and the tracks each part used."""
    used = state["stages"]["train"]["summary"]["tracks"]
    counts = f"{used['train']} / {used['val']} / {used['test']} tracks used for train / val / test"
    if cfg.dataset == "gtzan":
        return (
            "GTZAN paper split (docs/architecture.md §11.2 of PECMAE Hub: track numbers ending in 9 -> test, 8 -> "
            f"val, 0-7 -> train; 82 faulty or duplicate tracks excluded; 731 / 96 / 91 in full); {counts}"
        )
    return f"Medley-solos-DB official split (training / validation / test subsets of its metadata CSV); {counts}"


def card_info(cfg, state: dict, ae, source, paths: dict) -> dict:
    """``pecmae.json`` / model card info of the recipe's model."""
    from pecmae_hub.recipes.sources import DEFAULT_AUTOENCODER, autoencoder_licence

    licence, notes = autoencoder_licence(ae, source)
    evaluation = json.loads((paths["evaluation"] / "summary.json").read_text())
    train = state["stages"]["train"]["summary"]
    k = train["protos_per_class"]
    title = cfg.spec.title
    description = (
        f"PECMAE prototype classifier for {title} ({len(evaluation['test']['labels'])} classes, {k} "
        f"prototypes per class), trained with the paper's protocol by `pecmae recipe {cfg.dataset}`: a "
        f"frozen autoencoder ({source.describe()}) turns every {ae.chunk_seconds:g}-s chunk into z; the "
        f"prototype head was trained for {train['steps']} steps (selected at step {train['best_step']} on "
        "validation track accuracy)."
    )
    data_note = (
        f"The head was trained on {title}; no audio of the dataset is in this repository (nearest.json "
        "names training tracks only), and the dataset's own terms apply to it."
    )
    return {
        "dataset": cfg.spec.dataset_id,
        "dataset_name": title,
        "datasets": [cfg.spec.dataset_id],
        "split": split_text(cfg, state),
        "license": licence,
        "licence_notes": [*notes, data_note],
        "autoencoder_source": source.describe(),
        "description": description,
        "tags": ["music-genre-classification" if cfg.dataset == "gtzan" else "instrument-recognition", cfg.dataset],
        "evaluation": evaluation,
        "paper_results": paper_results(cfg.dataset, k),
        "recipe": f"pecmae recipe {cfg.dataset} --data {'hub' if cfg.data == 'hub' else 'DIR'}"
        + (
            ""
            if source.kind == "name" and source.name == DEFAULT_AUTOENCODER
            else f" --autoencoder {source.name if source.kind != 'folder' else 'FOLDER'}"
        )
        + (f" --protos-per-class {k}" if cfg.protos_per_class else "")
        + (f" --steps {train['steps']}" if cfg.steps else ""),
    }


def recipe_report(cfg, state: dict, paths: dict) -> str:
    """The final report (also ``WORK/report.md``) built from the recorded stage summaries."""
    stages = state["stages"]
    lines = [f"# pecmae recipe {cfg.dataset}: report", ""]
    if "data" in stages:
        lines += data_lines(cfg, stages["data"]["summary"]).splitlines()
    if "extract" in stages:
        e = stages["extract"]["summary"]
        lines.append(
            f"extract: {e['tracks']} tracks, {e['encoded']} encoded now, {e['reused']} reused, "
            f"{len(e['failed'])} left out"
        )
        lines += [f"extract: left out {key} ({err})" for key, err in e["failed"]]
    if "train" in stages:
        tr = stages["train"]["summary"]
        used, left = tr["tracks"], tr["left_out"]
        lines.append(
            "tracks used: "
            + ", ".join(
                f"{s} {used[s]}" + (f" ({len(left[s])} left out)" if left[s] else "") for s in ("train", "val", "test")
            )
        )
        lines.append(
            f"train: {tr['steps']} steps, K = {tr['protos_per_class']}, best step {tr['best_step']}, "
            f"{tr['wall_seconds']:.0f} s"
        )
    summary = paths["evaluation"] / "summary.json"
    if "evaluate" in stages and summary.is_file():
        evaluation = json.loads(summary.read_text())
        lines += ["", comparison_lines(cfg, stages["train"]["summary"]["protos_per_class"], evaluation), ""]
        for split, r in evaluation.items():
            ret = r.get("retention") or {}
            lines.append(
                f"{split}: prototype accuracy {r['prototype']['accuracy']:.4f}, macro-F1 "
                f"{r['prototype']['macro_f1']:.4f}; retention vs linear probe "
                f"{ret.get('linear_probe', float('nan')):.1%}, vs MLP {ret.get('mlp', float('nan')):.1%}"
            )
    if "render" in stages:
        n = stages["render"]["summary"]["prototypes"]
        lines.append(f"render: {n} prototypes -> {paths['renders'] / 'prototypes'}")
    if "card" in stages:
        lines.append(f"model folder: {Path(stages['card']['summary']['folder'])}")
    if "push" in stages:
        p = stages["push"]["summary"]
        lines.append(f"published: {p['repo']} (commit {p['commit']})")
    return "\n".join(lines)
