"""The paper's recipes: ``pecmae recipe gtzan`` and ``pecmae recipe medley-solos-db``, data to Hub-ready model.

Stages, in order (docs/architecture.md §8 for the protocol, §11 for the data):

``data``      the split: GTZAN's paper split (731/96/91, from a folder, an archive or the ``marsyas/gtzan``
              dataset repo, unpacked once into ``WORK/data``) or Medley-Solos-DB's official one (its CSV);
              ``WORK/splits/{train,val,test}.tsv``, ``labels.txt``, ``tracks.txt``, ``dataset.json``
``extract``   z per chunk of every split track (``extract_features``: batched, device-aware, sharded over
              the processes of ``accelerate launch -m pecmae_hub.cli recipe ...``); undecodable tracks are
              reported and left out
``train``     the prototype head with the paper preset (``--steps`` overrides the step count)
``evaluate``  track accuracy, macro-F1, confusion matrix, linear-probe and MLP baselines, retention
``render``    every prototype as a WAV (``WORK/renders/prototypes``)
``card``      the Hub-ready folder ``WORK/model`` with its model card
``push``      upload (only with ``--push ORG/NAME``)

Each finished stage is recorded in ``WORK/recipe_state.json`` with the settings it ran with; a rerun
skips it, and a stage that runs again makes the later ones run again too. A stage whose recorded
settings differ from this run's is an error, unless ``--redo STAGE`` asks to run it (and all later
stages) again. A failing stage raises :class:`RecipeStageError` naming the stage, the cause and the
command that resumes the run; nothing later runs, and nothing is published.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pecmae_hub.errors import ConfigError, DatasetError, PecmaeError
from pecmae_hub.recipes import paper_report as report
from pecmae_hub.recipes.paper_data import DATASETS, PaperDataset
from pecmae_hub.recipes.sources import DEFAULT_AUTOENCODER, load_autoencoder_source
from pecmae_hub.storage.atomic import atomic_write_text

STAGES = ("data", "extract", "train", "evaluate", "render", "card", "push")
_STRICT = ("data", "extract", "train", "evaluate", "render")  # settings mismatch: error unless --redo
STATE_NAME = "recipe_state.json"
_SHARED = ("extract", "train")  # stages that every process of `accelerate launch` works on


class RecipeStageError(PecmaeError, RuntimeError):
    """A recipe stage failed: names the stage, the cause and the command that resumes the run."""

    def __init__(self, stage: str, cause: str, command: str):
        self.stage, self.cause, self.command = stage, cause, command
        super().__init__(
            f"stage {stage!r} failed: {cause}\n  nothing after it ran. Fix the cause, then resume with:\n    {command}"
        )


@dataclass
class PaperRecipeConfig:
    """What ``pecmae recipe gtzan|medley-solos-db`` was asked to do (see the CLI for each option)."""

    dataset: str
    data: str
    work: str
    autoencoder: str = DEFAULT_AUTOENCODER
    autoencoder_revision: str | None = None
    protos_per_class: int | None = None  # None: the preset's (5 for GTZAN, 20 for Medley-Solos-DB)
    steps: int | None = None  # None: the preset's 150 000
    device: str = "auto"
    batch_size: int = 32
    num_workers: int = 0
    seed: int = 42
    baseline_steps: int = 2000
    render_steps: int = 40
    render_guidance: float = 1.0
    render_seed: int = 0  # sonify()'s default, so that default requests play the pre-renders
    push: str | None = None
    bundle_autoencoder: bool = False
    autoencoder_repo: str | None = None
    private: bool = False
    redo: tuple[str, ...] = ()
    progress: bool = True

    @property
    def spec(self) -> PaperDataset:
        return DATASETS[self.dataset]

    def command(self) -> str:
        """The command that runs (or resumes) this recipe."""
        args = ["pecmae", "recipe", self.dataset, "--data", self.data, "--work", self.work]
        for flag, value, default in (
            ("--autoencoder", self.autoencoder, DEFAULT_AUTOENCODER),
            ("--autoencoder-revision", self.autoencoder_revision, None),
            ("--protos-per-class", self.protos_per_class, None),
            ("--steps", self.steps, None),
            ("--device", self.device, "auto"),
            ("--batch-size", self.batch_size, 32),
            ("--seed", self.seed, 42),
            ("--baseline-steps", self.baseline_steps, 2000),
            ("--render-steps", self.render_steps, 40),
            ("--push", self.push, None),
            ("--autoencoder-repo", self.autoencoder_repo, None),
        ):
            if value != default:
                args += [flag, str(value)]
        args += ["--bundle-autoencoder"] * self.bundle_autoencoder + ["--private"] * self.private
        return shlex.join(args)


class PaperRecipe:
    """One run of a paper recipe over its work folder; :meth:`run` does the stages."""

    def __init__(self, cfg: PaperRecipeConfig):
        if cfg.dataset not in DATASETS:
            raise ConfigError(f"unknown paper recipe {cfg.dataset!r}; choose one of {sorted(DATASETS)}")
        bad = [s for s in cfg.redo if s not in STAGES]
        if bad:
            raise ConfigError(f"--redo {bad[0]!r}: not a stage; stages: {', '.join(STAGES)}")
        self.cfg, self.work = cfg, Path(cfg.work)
        self.path = {
            name: self.work / name for name in ("data", "splits", "features", "head", "evaluation", "renders", "model")
        }
        self._ae = None
        self.main_process = True  # False in the other processes of `accelerate launch`: they stay quiet
        self.log: list[str] = []

    # ---- state ------------------------------------------------------------------------------------
    def _state(self) -> dict:
        path = self.work / STATE_NAME
        state = json.loads(path.read_text()) if path.is_file() else {"recipe": self.cfg.dataset, "stages": {}}
        if state.get("recipe") != self.cfg.dataset:
            raise ConfigError(
                f"{self.work} holds a {state.get('recipe')!r} recipe run, not {self.cfg.dataset!r}: "
                "choose another --work folder"
            )
        return state

    def _save_state(self, state: dict) -> None:
        atomic_write_text(self.work / STATE_NAME, json.dumps(state, indent=1, default=str) + "\n")

    def settings(self, stage: str) -> dict:
        """What a stage's result depends on; a finished stage with other settings is not reused."""
        c, preset = self.cfg, self._preset()
        return {
            "data": {"data": c.data},
            "extract": {"autoencoder": c.autoencoder, "revision": c.autoencoder_revision},
            "train": {"protos_per_class": preset.protos_per_class, "steps": preset.total_steps, "seed": c.seed},
            "evaluate": {"baseline_steps": c.baseline_steps, "seed": c.seed},
            "render": {"steps": c.render_steps, "guidance": c.render_guidance, "seed": c.render_seed},
            "card": {"bundle_autoencoder": c.bundle_autoencoder},
            "push": {
                "repo": c.push,
                "bundle_autoencoder": c.bundle_autoencoder,
                "autoencoder_repo": c.autoencoder_repo,
                "package": _digest(self.path["model"] / "checksums.json"),
            },
        }[stage]

    def _preset(self):
        from pecmae_hub.training.head import TrainConfig

        return TrainConfig.from_preset(
            self.cfg.spec.preset, protos_per_class=self.cfg.protos_per_class, total_steps=self.cfg.steps
        )

    def say(self, line: str) -> None:
        from tqdm.auto import tqdm

        self.log.append(line)
        if self.main_process:
            tqdm.write(line)

    # ---- running ----------------------------------------------------------------------------------
    def run(self, stages: list[str] | None = None) -> dict:
        """Run the stages (all by default, ``push`` only with ``--push``); returns the recipe state.

        Raises:
            RecipeStageError: a stage failed (the message names it and the command that resumes).
            ConfigError: the work folder belongs to another run, or settings changed without ``--redo``.
        """
        from pecmae_hub.distributed import processes, wait_for_everyone

        procs = processes()
        self.main_process = procs.is_main_process
        self.work.mkdir(parents=True, exist_ok=True)
        state = self._state()
        redo_from = min((STAGES.index(s) for s in self.cfg.redo), default=len(STAGES))
        wanted_stages = [s for s in STAGES if (not stages or s in stages) and (s != "push" or self.cfg.push)]
        rerun = False
        for i, stage in enumerate(STAGES):
            if stage not in wanted_stages:
                continue
            # the other processes of `accelerate launch` share extract and train; they stop after the last of them
            together = any(s in _SHARED for s in wanted_stages[wanted_stages.index(stage) :])
            if not together and not procs.is_main_process:
                break
            state = self._state()
            done = state["stages"].get(stage)
            wanted = self.settings(stage)
            if done and not rerun and i < redo_from and done.get("settings") == wanted:
                self.say(f"== {stage}: finished earlier ({done.get('finished')}), skipped ==")
                continue
            if done and not rerun and i < redo_from and stage in _STRICT:
                raise ConfigError(
                    f"stage {stage!r} finished earlier with {done.get('settings')}, this run asks for {wanted}: "
                    f"add --redo {stage} to run it (and the stages after it) again, or use another --work folder"
                )
            rerun = True
            if procs.is_main_process:
                for later in STAGES[i:]:
                    state["stages"].pop(later, None)
                self._save_state(state)
            if stage not in _SHARED and not procs.is_main_process:
                wait_for_everyone(f"recipe stage {stage}")  # while the main process runs it (data: download, unpack)
                continue
            self.say(f"== {stage} ==")
            t0 = time.time()
            try:
                summary = getattr(self, f"stage_{stage}")()
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                cause = str(exc) if isinstance(exc, PecmaeError) else f"{type(exc).__name__}: {exc}"
                raise RecipeStageError(stage, cause, self.cfg.command()) from exc
            if procs.is_main_process:
                state["stages"][stage] = {
                    "settings": self.settings(stage),
                    "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "seconds": round(time.time() - t0, 1),
                    "summary": summary,
                }
                self._save_state(state)
            if together:
                wait_for_everyone(f"recipe stage {stage}")
        if not procs.is_main_process:
            return self._state()
        if procs.is_main_process:
            text = report.recipe_report(self.cfg, self._state(), self.path)
            atomic_write_text(self.work / "report.md", text + "\n")
            self.say(text)
        return self._state()

    # ---- shared inputs ----------------------------------------------------------------------------
    def autoencoder(self):
        if self._ae is None:
            from pecmae_hub.devices import resolve_device

            self._ae = load_autoencoder_source(
                self.cfg.autoencoder, self.cfg.autoencoder_revision, device=str(resolve_device(self.cfg.device))
            )
        return self._ae

    def labels(self) -> list[str]:
        from pecmae_hub.data.split_files import read_labels

        return read_labels(self.path["splits"] / "labels.txt")

    def feature_sets(self) -> dict:
        from pecmae_hub.training.features import load_features

        labels = self.labels()
        return {
            s: load_features(self.path["features"], self.path["splits"] / f"{s}.tsv", labels)
            for s in ("train", "val", "test")
        }

    # ---- stages -----------------------------------------------------------------------------------
    def stage_data(self) -> dict:
        from pecmae_hub.recipes.paper_data import prepare_splits

        summary = prepare_splits(self.cfg, self.path["data"], self.path["splits"])
        self.say(report.data_lines(self.cfg, summary))
        return summary

    def stage_extract(self) -> dict:
        from pecmae_hub.distributed import processes, wait_for_everyone
        from pecmae_hub.recipes.timing import Projection
        from pecmae_hub.training.extract import FAILURES_NAME, extract_features
        from pecmae_hub.training.features import feature_path

        procs = processes()  # under accelerate launch each process encodes its shard
        ae, source = self.autoencoder()
        if {"data", "extract"} & set(self.cfg.redo) and self.main_process:
            shutil.rmtree(self.path["features"], ignore_errors=True)  # other audio or autoencoder: start afresh
        wait_for_everyone("recipe stage extract")
        tracks = self.path["splits"] / "tracks.txt"
        keys = {p: f"{Path(p).parent.name}/{Path(p).name}" for p in tracks.read_text().splitlines() if p}
        todo = sum(not feature_path(self.path["features"], k).is_file() for k in keys.values())
        self.say(
            f"extract: {len(keys)} tracks ({todo} to encode) with the {source.describe()} "
            f"(D = {ae.embedding_dim}, {ae.chunk_seconds:g}-s chunks, batches of {self.cfg.batch_size})"
        )
        projection = Projection(
            "extract", -(-todo // procs.num_processes), write=None if procs.is_main_process else (lambda _line: None)
        )
        extract_features(
            tracks,
            self.path["features"],
            ae,
            device=self.cfg.device,
            batch_size=self.cfg.batch_size,
            progress=self.cfg.progress,
            num_workers=self.cfg.num_workers,
            on_track_done=projection,
        )  # one shard's projection
        report_file = self.path["features"] / FAILURES_NAME  # every process's failures, written by the main one
        rows = report_file.read_text().splitlines()[1:] if report_file.is_file() else []
        failed = [(keys.get(p, p), err) for p, _, err in (row.partition("\t") for row in rows)]
        for key, err in failed:
            self.say(f"extract: left out {key}: cannot be decoded or encoded ({err})")
        encoded = sum(feature_path(self.path["features"], k).is_file() for k in keys.values())
        if not encoded:
            raise DatasetError(
                f"none of the {len(keys)} tracks could be encoded; first error: {failed[0][1] if failed else 'unknown'}"
            )
        return {
            "tracks": len(keys),
            "encoded": encoded - (len(keys) - todo),
            "reused": len(keys) - todo,
            "failed": [list(f) for f in failed],
            "fingerprint": ae.fingerprint(),
            "embedding_dim": ae.embedding_dim,
        }

    def stage_train(self) -> dict:
        import dataclasses

        from pecmae_hub.configuration import AutoencoderRef
        from pecmae_hub.devices import resolve_device
        from pecmae_hub.recipes.timing import format_duration, time_head_steps
        from pecmae_hub.training.head import train_head

        sets = self.feature_sets()
        for split, fs in sets.items():
            if fs.missing:
                self.say(
                    f"train: {split} split: {len(fs)} tracks used, {len(fs.missing)} left out (no features: "
                    f"{', '.join(fs.missing[:5])})"
                )
        manifest = json.loads((self.path["features"] / "extract_manifest.json").read_text())
        device = "cuda" if self.cfg.device.startswith("cuda") else self.cfg.device
        base = self._preset()
        cfg = dataclasses.replace(
            base,
            seed=self.cfg.seed,
            device=device,
            eval_every=min(base.eval_every, max(1, base.total_steps // 20)),
            autoencoder=AutoencoderRef(
                fingerprint=manifest["autoencoder"]["fingerprint"], embedding_dim=manifest["embedding_dim"]
            ),
        )
        x, y, _ = sets["train"].chunks()
        probe, per_step = min(30, cfg.total_steps), float("nan")
        if self.main_process:  # one probe is enough (under accelerate launch: on the first device, one process)
            per_step = time_head_steps(
                x, y, len(sets["train"].label_names), cfg, steps=probe, device=resolve_device(self.cfg.device)
            )
            self.say(
                f"train: {cfg.total_steps} steps (preset {cfg.preset!r}, K = {cfg.protos_per_class}, batch "
                f"{cfg.batch_size}) on {len(x)} training chunks; first {probe} steps: {per_step * 1000:.1f} ms/step, "
                f"projected {format_duration(per_step * cfg.total_steps)}"
            )
        _, metrics = train_head(
            sets["train"], sets["val"], sets["test"], cfg, out_dir=self.path["head"], progress=self.cfg.progress
        )
        for split in ("val", "test"):
            m = metrics[split]
            self.say(
                f"train: {split} track accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
                f"({m['n_tracks']} tracks); best step {metrics['best_step']}"
            )
        return {
            "steps": cfg.total_steps,
            "best_step": metrics["best_step"],
            "protos_per_class": cfg.protos_per_class,
            "seconds_per_step_probe": per_step,
            "wall_seconds": metrics["wall_seconds"],
            "tracks": {s: len(fs) for s, fs in sets.items()},
            "left_out": {s: list(fs.missing) for s, fs in sets.items()},
        }

    def stage_evaluate(self) -> dict:
        from pecmae_hub.models.head import PrototypeHead
        from pecmae_hub.training.evaluation import evaluate_head, format_report

        head = PrototypeHead.from_pretrained(self.path["head"])
        sets = self.feature_sets()
        out = {}
        for split in ("val", "test"):
            result = evaluate_head(
                head,
                sets[split],
                sets["train"],
                self.path["evaluation"] / split,
                mlp_steps=self.cfg.baseline_steps,
                seed=self.cfg.seed,
            )
            self.say(f"-- {split} --\n{format_report(result)}")
            out[split] = {k: v for k, v in result.items() if k != "predictions"}
        atomic_write_text(self.path["evaluation"] / "summary.json", json.dumps(out, indent=1) + "\n")
        self.say(report.comparison_lines(self.cfg, head.protos_per_class, out))
        return {
            s: {"accuracy": r["prototype"]["accuracy"], "macro_f1": r["prototype"]["macro_f1"]} for s, r in out.items()
        }

    def _model(self, files=None):
        from pecmae_hub.hub.files import ModelFiles
        from pecmae_hub.models.head import PrototypeHead
        from pecmae_hub.pipeline import PECMAE

        head = PrototypeHead.from_pretrained(self.path["head"])
        ae, _ = self.autoencoder()
        read = lambda name: json.loads((self.path["head"] / name).read_text())  # noqa: E731
        return PECMAE(
            ae,
            head,
            nearest=read("nearest.json"),
            metrics=read("metrics.json"),
            name=f"{self.cfg.dataset}-pecmae-{head.protos_per_class}",
            files=ModelFiles(folder=files) if files else None,
        )

    def stage_render(self) -> dict:
        from pecmae_hub.recipes.timing import format_duration

        model = self._model()
        c = self.cfg
        t0 = time.perf_counter()
        model.autoencoder.decode(
            model.head.effective_prototypes()[:1], steps=c.render_steps, guidance=c.render_guidance, seed=c.render_seed
        )
        one = time.perf_counter() - t0
        n = model.head.num_prototypes
        self.say(
            f"render: {n} prototypes, {c.render_steps} diffusion steps each; the first took {one:.2f} s, "
            f"projected {format_duration(one * n)}"
        )
        partial = self.work / ".renders.partial"
        shutil.rmtree(partial, ignore_errors=True)
        index = model.render_prototypes(
            partial, steps=c.render_steps, guidance=c.render_guidance, seed=c.render_seed, progress=c.progress
        )
        shutil.rmtree(self.path["renders"], ignore_errors=True)
        partial.rename(self.path["renders"])
        return {"prototypes": len(index["prototypes"]), "steps": c.render_steps, "guidance": c.render_guidance}

    def stage_card(self) -> dict:
        from pecmae_hub.configuration import AutoencoderRef

        model = self._model(files=self.path["renders"])
        ae, source = self.autoencoder()
        bundled = self.cfg.bundle_autoencoder or source.kind == "folder"
        if bundled:
            model.autoencoder_ref = AutoencoderRef()
        elif source.kind == "name":  # users get it from its authors' repos, pinned to these commits
            model.autoencoder_ref = AutoencoderRef(name=source.name, sources=source.sources)
        else:
            model.autoencoder_ref = AutoencoderRef(repo_id=source.repo_id, revision=source.revision)
        state = self._state()
        model.info = report.card_info(self.cfg, state, ae, source, self.path)
        partial = self.work / ".model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        self._write_fidelity(model, partial)
        shutil.rmtree(self.path["model"], ignore_errors=True)
        partial.rename(self.path["model"])
        self.say(
            f"card: Hub-ready model folder {self.path['model']} (autoencoder "
            f"{'bundled' if bundled else 'referenced: ' + source.describe()})"
        )
        return {"folder": str(self.path["model"]), "autoencoder_bundled": bundled, "license": model.info["license"]}

    def _write_fidelity(self, model, folder: Path) -> None:
        """The fidelity record (what lets ``precision="auto"`` run the model fast), measured on the test split."""
        from pecmae_hub.data.split_files import read_tsv
        from pecmae_hub.fidelity import write_fidelity
        from pecmae_hub.models.fidelity_record import summary

        test = {rel for _, rel in read_tsv(self.path["splits"] / "test.tsv")}
        tracks = [p for p in (self.path["splits"] / "tracks.txt").read_text().splitlines() if p]
        held_out = [p for p in tracks if f"{Path(p).parent.name}/{Path(p).name}" in test]
        record = write_fidelity(model, folder, held_out or None, progress=self.cfg.progress)
        for name, entry in sorted(record["precisions"].items()):
            self.say(f"card: fidelity {name}: {'passes' if entry['passed'] else 'fails'} ({summary(entry)})")

    def stage_push(self) -> dict:
        from pecmae_hub.recipes.paper_publish import publish

        return publish(self, self.cfg.push)


def _digest(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def run_paper_recipe(cfg: PaperRecipeConfig, stages: list[str] | None = None) -> dict:
    """Run a paper recipe (see the module doc); returns its state (``recipe_state.json``)."""
    return PaperRecipe(cfg).run(stages)
