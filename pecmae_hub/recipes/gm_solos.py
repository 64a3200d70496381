"""The embedded default model's training recipe, one resumable stage after another.

``pecmae recipe gm-solos --work runs/gm-solos`` runs: data (render GM-Solos) → autoencoder (train the
mel-front-end autoencoder: v-diffusion + contrastive terms, see ``training.autoencoder``) → extract (z per
clip) → head (prototype head, K=3) → evaluate → vocoder (the neural mel vocoder, ``training.vocoder``) →
decoder (a larger diffusion decoder re-trained with the encoder frozen, ``training.decoder``) → package
(sonify every prototype, model card, copy to ``checkpoints/gm-solos``).

``--from-model FOLDER`` starts from a finished model instead (its autoencoder and head are copied into the
work folder once), so the vocoder and decoder stages can be re-run on the shipped model without
re-training what z and the classifier are.
Each stage skips work already done, so an interrupted run continues where it stopped.

Splits: the three training banks' clips with index < ``val_from`` train, the rest validate (held-out
clips of seen banks); the TimGM6mb bank is never seen before the test.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pecmae_hub.configuration import AutoencoderRef
from pecmae_hub.data.gm_solos.render import TEST_BANKS, TRAIN_BANKS, read_metadata
from pecmae_hub.errors import ConfigError, DatasetError, IncompleteRunError
from pecmae_hub.models.autoencoder import Autoencoder, AutoencoderConfig
from pecmae_hub.storage.atomic import atomic_write_text
from pecmae_hub.storage.integrity import write_checksums

STAGES = ("data", "autoencoder", "extract", "head", "evaluate", "vocoder", "decoder", "package")
TEST_BANK = TEST_BANKS[0]


#: what the embedded model's decoder reproduces and what it cannot, in one line (card and app)
SONIFICATION_NOTE = (
    "The decoder plays the timbre a prototype stands for (the instrument's spectral envelope, attack and noise) "
    "as a new 1.5 s excerpt, sampled at a low temperature for steady notes: it does not reproduce the notes of "
    "any recording, and the prototypes of percussive or distorted instruments (piano, distorted guitar) come "
    "out as a blurred texture rather than clean notes."
)

#: what the decoder and the neural vocoder were trained on (the card's licence notes)
DECODER_LICENCE_NOTE = (
    "The diffusion decoder and the neural vocoder (in `autoencoder/`) were trained here on the training banks' "
    "clips only: FluidR3_GM (MIT, Frank Wen), MuseScore General (MIT, S. Christian Collins) and sf_GMbank "
    "(Csound, public domain); never on TimGM6mb (GPL-2), the held-out test bank. Their weights are MIT."
)

#: the decoder of the shipped model (``decoder`` stage): adaLN transformer, 256-d, 6 layers, 2 frames per token,
#: stored (with the vocoder) in float16
DECODER = {
    "denoiser_type": "adaln",
    "denoiser_dim": 256,
    "denoiser_layers": 6,
    "denoiser_heads": 4,
    "denoiser_ff_dim": 1024,
    "denoiser_patch": 2,
    "decoder_dtype": "float16",
}


def gm_solos_autoencoder_config() -> AutoencoderConfig:
    """The embedded autoencoder: log-mel 128 × 75 Hz, 128-d model, 1.5-s chunks (two per GM-Solos clip)."""
    return AutoencoderConfig(
        frontend="mel",
        chunk_seconds=1.5,
        signal_dim=128,
        model_dim=128,
        frame_layers=3,
        frame_heads=4,
        ff_dim=512,
        cls_layers=1,
        cls_heads=4,
        denoiser_layers=3,
        denoiser_heads=4,
        mel={"n_fft": 1024, "fmin": 0.0, "fmax": 12000.0, "offset": -6.0, "scale": 3.0, "griffin_lim_iters": 64},
        source="pecmae recipe gm-solos (trained from scratch on GM-Solos training banks)",
    )


@dataclass
class RecipeConfig:
    work: str = "runs/gm-solos"
    data: str | None = None  # existing rendered data (default: <work>/data)
    n_per_class: int = 220  # per training bank
    n_test_per_class: int = 60  # TimGM6mb
    val_from: int = 180  # clip index from which training-bank clips validate
    seed: int = 0
    ae_steps: int = 4000
    ae_batch_size: int = 32
    ae_time_budget_s: float | None = None
    invariance_weight: float = 1.0
    label_weight: float = 1.0  # SupCon across banks in autoencoder training (0 = no labels)
    ae_init: str | None = None  # warm-start the autoencoder from this folder
    head_steps: int = 3000
    head_alpha: float = 0.25  # chosen on validation accuracy (paper: 0.75; see docs/gm-solos.md)
    protos_per_class: int = 3
    vocoder_steps: int = 6500
    vocoder_batch_size: int = 16
    vocoder: dict = field(default_factory=dict)  # VocoderConfig overrides (tests use tiny ones)
    decoder_steps: int = 6000
    decoder_batch_size: int = 32
    decoder: dict = field(default_factory=lambda: dict(DECODER))  # denoiser fields of the re-trained decoder
    time_budget_s: float | None = None  # vocoder/decoder stages: stop (resumable) when spent
    # the renders' settings, also what sonify uses by default for this model (chosen in docs/gm-solos.md)
    sonify_steps: int = 14
    sonify_guidance: float = 1.0
    sonify_scheduler: str = "unipc"
    sonify_temperature: float = 0.4
    from_model: str | None = None  # start from this finished model folder (autoencoder + head)
    out: str = "checkpoints/gm-solos"
    autoencoder: dict = field(default_factory=dict)  # AutoencoderConfig overrides (tests use tiny ones)

    @property
    def data_dir(self) -> Path:
        return Path(self.data) if self.data else Path(self.work) / "data"


def _metadata_rows(cfg: RecipeConfig) -> list[dict]:
    rows = read_metadata(cfg.data_dir / "metadata.csv")
    if not rows:
        raise DatasetError(f"no GM-Solos clips listed in {cfg.data_dir / 'metadata.csv'}: run the data stage first")
    return list(rows.values())


def _split_of(row: dict, cfg: RecipeConfig) -> str:
    if row["bank"] == TEST_BANK:
        return "test"
    return "train" if int(row["index"]) < cfg.val_from else "val"


def stage_data(cfg: RecipeConfig) -> None:
    from pecmae_hub.data.gm_solos.render import generate_dataset

    generate_dataset(cfg.data_dir, list(TRAIN_BANKS), cfg.n_per_class, seed=cfg.seed, split_name="train", workers=2)
    generate_dataset(cfg.data_dir, [TEST_BANK], cfg.n_test_per_class, seed=cfg.seed, split_name="test", workers=2)


def load_clips(cfg: RecipeConfig, split: str, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's clips zero-padded/cut to ``samples`` (N, samples) and their class ids (N,)."""
    from pecmae_hub.audio import load_audio
    from pecmae_hub.data.gm_solos.render import LABELS

    rows = [r for r in _metadata_rows(cfg) if _split_of(r, cfg) == split]
    clips = torch.zeros(len(rows), samples)
    for i, row in enumerate(rows):
        wav = load_audio(cfg.data_dir / row["path"])[:samples]
        clips[i, : len(wav)] = torch.from_numpy(wav)
    return clips, torch.tensor([LABELS.index(r["label"]) for r in rows])


def stage_autoencoder(cfg: RecipeConfig) -> Path:
    """Train (or resume) the autoencoder and save it; :class:`IncompleteRunError` when the time budget ends it early."""
    from pecmae_hub.training.autoencoder import AETrainConfig, train_autoencoder

    out = Path(cfg.work) / "autoencoder"
    final = out / "model"
    if (final / "model.safetensors").exists():
        return final
    config = dataclasses.replace(gm_solos_autoencoder_config(), **cfg.autoencoder)
    ae = Autoencoder(config)
    if cfg.ae_init and not (out / "checkpoint.pt").exists():
        ae = Autoencoder.from_pretrained(cfg.ae_init)
        ae.config = dataclasses.replace(ae.config, source=config.source)
    clips, labels = load_clips(cfg, "train", int(3.0 * 24_000))  # whole clips; training crops chunks at random
    train_cfg = AETrainConfig(
        steps=cfg.ae_steps,
        batch_size=cfg.ae_batch_size,
        seed=cfg.seed,
        invariance_weight=cfg.invariance_weight,
        label_weight=cfg.label_weight,
        warmup_steps=max(1, min(200, cfg.ae_steps // 10)),
        checkpoint_every=max(1, min(250, cfg.ae_steps // 4)),
    )
    train_autoencoder(ae, clips, train_cfg, out, time_budget_s=cfg.ae_time_budget_s, labels=labels)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    if int(state["step"]) < cfg.ae_steps:
        raise IncompleteRunError(
            f"autoencoder: stopped at step {state['step']} of {cfg.ae_steps} (time budget); run again to continue"
        )
    ae.save_pretrained(final)
    return final


def _split_rows(cfg: RecipeConfig) -> dict[str, list[tuple[str, str]]]:
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for row in _metadata_rows(cfg):
        splits[_split_of(row, cfg)].append((row["label"], row["path"]))
    return splits


def stage_extract(cfg: RecipeConfig) -> Path:
    from pecmae_hub.training.extract import extract_features

    features = Path(cfg.work) / "features"
    ae = Autoencoder.from_pretrained(Path(cfg.work) / "autoencoder" / "model")
    summary = extract_features(cfg.data_dir, features, ae, batch_size=64)
    if getattr(summary, "failed", 0):
        print(f"extract: {summary.failed} files failed, see {features / 'failures.tsv'}")
    return features


def _feature_sets(cfg: RecipeConfig):
    from pecmae_hub.data.gm_solos.render import LABELS
    from pecmae_hub.training.features import load_features

    features = Path(cfg.work) / "features"
    return {name: load_features(features, rows, list(LABELS)) for name, rows in _split_rows(cfg).items()}


def stage_head(cfg: RecipeConfig) -> Path:
    from pecmae_hub.training.head import TrainConfig, train_head

    out = Path(cfg.work) / "head"
    if (out / "model.safetensors").exists():
        return out
    sets = _feature_sets(cfg)
    train_cfg = TrainConfig.from_preset(
        None,
        protos_per_class=cfg.protos_per_class,
        alpha=cfg.head_alpha,
        total_steps=cfg.head_steps,
        eval_every=max(1, cfg.head_steps // 12),
        seed=cfg.seed,
        autoencoder=AutoencoderRef(path="autoencoder"),
    )
    train_head(sets["train"], sets["val"], sets["test"], train_cfg, out_dir=out)
    return out


def stage_evaluate(cfg: RecipeConfig) -> dict:
    from pecmae_hub.models.head import PrototypeHead
    from pecmae_hub.training.evaluation import evaluate_head, format_report

    head = PrototypeHead.from_pretrained(Path(cfg.work) / "head")
    sets = _feature_sets(cfg)
    report = {}
    for split in ("val", "test"):
        result = evaluate_head(head, sets[split], sets["train"], Path(cfg.work) / "evaluation" / split)
        print(f"== {split} ==\n{format_report(result)}")
        report[split] = {k: v for k, v in result.items() if k != "predictions"}
    atomic_write_text(Path(cfg.work) / "evaluation" / "summary.json", json.dumps(report, indent=2, default=float))
    return report


def trained_autoencoder_dir(cfg: RecipeConfig) -> Path:
    return Path(cfg.work) / "autoencoder" / "model"


def _point_head_at(folder: Path, autoencoder: Autoencoder, trained: Autoencoder) -> None:
    """Record in the head of ``folder`` the fingerprint of ``autoencoder``, which shares its encoder with
    ``trained`` (the one the head was trained on; the decoder stage changed only the decoder). A head stored
    with the earlier whole-architecture fingerprint would otherwise not recognise its own z."""
    from pecmae_hub.models.head import PrototypeHead

    head = PrototypeHead.from_pretrained(folder)
    stored = head.config.autoencoder.fingerprint
    if not trained.matches_fingerprint(stored) or trained.fingerprint() != autoencoder.fingerprint():
        raise ConfigError(
            f"the head in {folder} was trained on autoencoder {stored}, not on {trained.fingerprint()} "
            f"(or the packaged autoencoder {autoencoder.fingerprint()} has another encoder)"
        )
    head.config = dataclasses.replace(
        head.config, autoencoder=head.config.autoencoder.replace(fingerprint=autoencoder.fingerprint())
    )
    head.save_pretrained(folder)


def stage_package(cfg: RecipeConfig) -> Path:
    """Assemble the Hub folder: head + ``autoencoder/`` + pre-rendered prototypes + model card + fidelity record."""
    from pecmae_hub.fidelity import write_fidelity
    from pecmae_hub.pipeline import PECMAE

    work = Path(cfg.work)
    staging = work / "package"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(work / "head", staging)
    decoder, vocoder = work / "decoder" / "model", work / "vocoder" / "model"
    autoencoder = Autoencoder.from_pretrained(decoder if decoder.exists() else trained_autoencoder_dir(cfg))
    if vocoder.exists():
        from pecmae_hub.models.vocoder import MelVocoder

        autoencoder.attach_vocoder(MelVocoder.from_pretrained(vocoder))
    autoencoder.config = dataclasses.replace(autoencoder.config, source=gm_solos_autoencoder_config().source)
    autoencoder.save_pretrained(staging / "autoencoder")
    write_checksums(staging)  # this recipe's own files (a head stage run before checksums were complete too)
    _point_head_at(staging, autoencoder, Autoencoder.from_pretrained(trained_autoencoder_dir(cfg)))
    summary = work / "evaluation" / "summary.json"
    if summary.exists():
        shutil.copy(summary, staging / "evaluation.json")
    write_checksums(staging)
    model = PECMAE.from_pretrained(staging)
    model.name = "gm-solos"
    model.info.update(
        dataset="gm-solos",
        datasets=["gm-solos"],
        tags=["instrument-recognition", "embedded-default"],
        license="mit",
        split=(
            f"train: clips {0}-{cfg.val_from - 1} of banks {', '.join(TRAIN_BANKS)}; val: clips {cfg.val_from}+ of "
            f"the same banks; test: the held-out bank {TEST_BANK} (never seen by the autoencoder or the head)"
        ),
        description=(
            "The embedded default model of PECMAE Hub: 8 solo instruments (the Medley-Solos-DB classes) rendered "
            "with FluidSynth from General MIDI SoundFont banks. A small mel-spectrogram autoencoder of the PECMAE "
            "family (ResiDual transformer + CLS encoder) trained here with the v-diffusion loss plus contrastive "
            "terms (two chunks of one clip; instruments across the training banks), a prototype head with 3 "
            "prototypes per class, and, to play the prototypes back, a diffusion decoder re-trained with the encoder "
            "frozen (adaLN transformer) and a neural mel vocoder (Vocos-style). Re-create it with "
            "`pecmae recipe gm-solos` (the exact commands behind this checkpoint and what each choice was worth: "
            "`docs/gm-solos.md` in the PECMAE Hub repository)."
        ),
        sonification_note=SONIFICATION_NOTE,
    )
    notes = [n for n in model.info.get("licence_notes") or [] if not n.startswith(DECODER_LICENCE_NOTE[:40])]
    model.info["licence_notes"] = [*notes, DECODER_LICENCE_NOTE]
    model.render_prototypes(
        staging,
        steps=cfg.sonify_steps,
        guidance=cfg.sonify_guidance,
        seed=cfg.seed,
        scheduler=cfg.sonify_scheduler,
        temperature=cfg.sonify_temperature,
    )
    model.save_pretrained(staging)
    test = [cfg.data_dir / r["path"] for r in _metadata_rows(cfg) if _split_of(r, cfg) == "test"]
    write_fidelity(model, staging, test, max_clips=160, progress=True)  # the held-out bank: what auto may run
    out = Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(staging, out)
    return out


def run_recipe(cfg: RecipeConfig, stages: list[str] | None = None) -> None:
    """Run the named stages (all by default) in order.

    Raises:
        IncompleteRunError: a training stage spent its time budget; running again continues it.
    """
    from pecmae_hub.recipes.gm_solos_sound import stage_decoder, stage_vocoder, start_from_model

    if cfg.from_model:
        start_from_model(cfg)
    for stage in stages or STAGES:
        print(f"== recipe stage: {stage} ==", flush=True)
        {
            "data": stage_data,
            "autoencoder": stage_autoencoder,
            "extract": stage_extract,
            "head": stage_head,
            "evaluate": stage_evaluate,
            "vocoder": stage_vocoder,
            "decoder": stage_decoder,
            "package": stage_package,
        }[stage](cfg)
