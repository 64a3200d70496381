"""The PECMAE Hub Gradio app: Classify, Prototypes and Model tabs over one :class:`ModelManager`.

``build_app()`` returns a ``gr.Blocks`` ready to launch; ``launch_options()`` gives the offline-safe
launch settings (theme, CSS, host/port from ``GRADIO_SERVER_*``, no share link), which are also bound
as defaults of the returned app's ``launch()``. Endpoints (``api_name``):

- ``/classify`` (audio file) → scores, headline, explanation (HTML), similarity map (HTML),
  3 × (decoded prototype WAV, 2 nearest-training-chunk WAVs, caption), details
- ``/prototype_audio`` (prototype ``label:k`` or index) → pre-rendered WAV, caption
- ``/sonify`` (prototype, steps, guidance, seed) → freshly decoded WAV, caption
- ``/model_info`` () → model card, overview, configuration
- ``/load_model`` (model name) → status (with the model's intro), model card, overview, configuration,
  prototype choices

Every event has a validator (the message appears on the input at fault; the outputs keep their values)
and shows its progress in one place. The model an endpoint uses is the session's (``/load_model``
switches it, among the models the operator allows: :mod:`pecmae_hub.app.access`; default
``PECMAE_MODEL``). Uploads are limited to ``PECMAE_MAX_UPLOAD_MB`` (Gradio's ``max_file_size``: a larger
upload is answered 413 and its partial file deleted); uploads (bare ``/gradio_api/upload`` calls too) and
result files are deleted ``PECMAE_FILE_TTL`` seconds after they were made (Gradio's ``delete_cache``).
"""

from __future__ import annotations

import functools
import logging
import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from pecmae_hub.app import settings as cfg
from pecmae_hub.app.access import ModelPolicy, scrub_paths
from pecmae_hub.app.handlers import Handlers
from pecmae_hub.app.models import ModelManager, ModelUnavailable
from pecmae_hub.app.plots import FIGURE_CSS

log = logging.getLogger(__name__)

TITLE = "PECMAE Hub · interpretable music classification"
CSS = (
    """
.pecmae-header h1 {margin-bottom: 0.2em;}
.pecmae-status {font-size: 0.95em;}
.pecmae-caption {font-size: 0.9em; line-height: 1.4;}
.pecmae-card {max-height: 640px; overflow-y: auto;}
[data-testid="status-tracker"]:has(.validation-error) {z-index: 50;}  /* above the label */
.pecmae-player label[data-testid="block-label"] {max-width: calc(100% - 44px);}  /* clear of the download button */
"""
    + FIGURE_CSS
)
INTRO = """# PECMAE Hub
The model says what it hears **and why**: it compares each chunk of your audio with sounds it learned
for each class (its *prototypes*). Play them, and the real training recordings closest to them
([PECMAE, arXiv 2402.09318](https://arxiv.org/abs/2402.09318)).
"""
HEAR_WHY = """#### Hear why
For each prototype that pushed hardest towards the answer: how it sounds, decoded by the model (the
PECMAE explanation), and the real training chunks closest to it (the APNet-style explanation). Listen
to them next to your clip."""


def theme() -> gr.themes.Base:
    """The app theme (local fonts only: no request leaves the machine)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="blue", neutral_hue="slate")


def launch_options(**overrides) -> dict:
    """Keyword arguments for ``Blocks.launch``: theme/CSS, ``GRADIO_SERVER_NAME`` (default 127.0.0.1),
    ``GRADIO_SERVER_PORT``, no share link, errors shown to users, the upload limit
    (``PECMAE_MAX_UPLOAD_MB``); ``overrides`` win."""
    options = dict(
        theme=theme(),
        css=CSS,
        server_name=cfg.server_name(),
        server_port=cfg.server_port(),
        share=False,
        show_error=True,
        footer_links=["api", "gradio", "settings"],
        max_file_size=cfg.AppSettings.from_env().max_upload_bytes,
    )
    options.update(overrides)
    return options


def _top_prototype_column(i: int) -> list:
    """Caption, decoded prototype and nearest-chunk players of the i-th top prototype (hidden until used)."""
    with gr.Column(min_width=280):
        caption = gr.Markdown(elem_classes=["pecmae-caption"], elem_id=f"top-caption-{i}")
        proto = gr.Audio(
            label=f"Top prototype {i}",
            type="filepath",
            interactive=False,
            visible=False,
            buttons=["download"],
            elem_id=f"top-prototype-{i}",
            elem_classes=["pecmae-player"],
        )
        nearest = [
            gr.Audio(
                label=f"Closest training chunk {n}",
                type="filepath",
                interactive=False,
                visible=False,
                buttons=["download"],
                elem_id=f"nearest-{i}-{n}",
                elem_classes=["pecmae-player"],
            )
            for n in range(1, cfg.NEAREST_PLAYERS + 1)
        ]
    return [proto, *nearest, caption]


def _classify_tab(handlers: Handlers, settings: cfg.AppSettings, state: gr.State) -> None:
    limit = cfg.format_seconds(settings.max_seconds)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            audio = gr.Audio(
                sources=["upload", "microphone"],
                type="filepath",
                label=f"Audio (up to {limit})",
                elem_id="classify-audio",
            )
            button = gr.Button("Classify", variant="primary", elem_id="classify-button")
            clips = settings.example_clips()
            examples = None
            if clips:
                examples = gr.Examples(
                    examples=[[str(p)] for p in clips],
                    inputs=[audio],
                    example_labels=[p.stem.replace("_", " ") for p in clips],
                    label="Example clips (one per class): click one to classify it",
                    examples_per_page=max(10, len(clips)),
                )
        with gr.Column(scale=5, min_width=300):
            summary = gr.Markdown(
                "_Upload or record a clip, or pick an example, then press **Classify**._",
                label="Summary",
                elem_id="summary",
            )
            scores = gr.Label(label="Class scores (whole clip)", num_top_classes=5, elem_id="scores")
    explanation = gr.HTML(js_on_load=None, elem_id="explanation", padding=True)
    gr.Markdown(HEAR_WHY)
    tops = []
    with gr.Row(equal_height=False):
        for i in range(1, settings.top_prototypes + 1):
            tops += _top_prototype_column(i)
    with gr.Accordion("Similarity of every chunk to every prototype", open=False):
        similarity = gr.HTML(js_on_load=None, elem_id="similarity", padding=True)
    with gr.Accordion("Details (JSON)", open=False):
        details = gr.JSON(label="Prediction")
    outputs = [scores, summary, explanation, similarity, *tops, details]
    button.click(
        handlers.classify,
        [audio, state],
        outputs,
        api_name="classify",
        validator=handlers.validate_classify,
        api_description="Classify an audio file with the session's model and explain the decision.",
        show_progress_on=[summary],
        concurrency_limit=cfg.CLASSIFY_CONCURRENCY,
        concurrency_id="classify",
    )
    if examples is not None:
        # results are memoised per (model, clip) and pre-computed for the start-up model (see docs/app.md)
        examples.load_input_event.then(
            handlers.classify,
            [audio, state],
            outputs,
            api_visibility="undocumented",
            validator=handlers.validate_classify,
            show_progress_on=[summary],
            concurrency_limit=cfg.CLASSIFY_CONCURRENCY,
            concurrency_id="classify",
        )


def _prototypes_tab(handlers: Handlers, state: gr.State, choices: list) -> gr.Dropdown:
    gr.Markdown(
        "Every prototype of the model, grouped by class, as pre-rendered by the diffusion decoder. "
        "Pick one below to decode it again with other settings."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            proto = gr.Dropdown(
                choices=choices,
                value=choices[0][1] if choices else None,
                label="Prototype",
                allow_custom_value=True,
                elem_id="prototype-select",
                info="A class and the number of its prototype, e.g. 'violin:0'.",
            )
            steps = gr.Slider(
                1,
                200,
                value=40,
                step=1,
                label="Diffusion steps",
                elem_id="sonify-steps",
                info="How many denoising passes the decoder makes: more is slower and usually "
                "cleaner (the pre-rendered audio used 40).",
            )
            guidance = gr.Slider(
                0.0,
                10.0,
                value=1.0,
                step=0.1,
                label="Guidance",
                elem_id="sonify-guidance",
                info="How strongly the decoder follows the prototype: 1 = plain decoding, "
                "higher exaggerates what is typical of it.",
            )
            seed = gr.Number(
                value=0,
                precision=0,
                minimum=0,
                label="Seed",
                elem_id="sonify-seed",
                info="The random starting noise: the same seed gives the same audio.",
            )
            sampler = gr.Dropdown(
                choices=[
                    ("UniPC (fast, 14 steps suffice)", "unipc"),
                    ("Exact upstream sampler", "upstream"),
                    ("DPM-Solver++", "dpmsolver++"),
                    ("DDIM", "ddim"),
                ],
                value="unipc",
                label="Sampler",
                elem_id="sonify-scheduler",
                info="How the decoder steps through the noise levels: UniPC reaches the exact sampler's quality "
                "in about a third of the steps; 'Exact' reproduces the upstream code.",
            )
            with gr.Row():
                play = gr.Button("Play pre-rendered", elem_id="play-prototype")
                sonify = gr.Button("Re-sonify", variant="primary", elem_id="sonify-button")
        with gr.Column(scale=3, min_width=300):
            out_audio = gr.Audio(
                label="Prototype audio",
                type="filepath",
                interactive=False,
                buttons=["download"],
                elem_id="prototype-audio",
            )
            out_caption = gr.Markdown(label="Prototype caption", elem_classes=["pecmae-caption"])
    play.click(
        handlers.prototype_audio,
        [proto, state],
        [out_audio, out_caption],
        api_name="prototype_audio",
        validator=handlers.validate_prototype,
        show_progress_on=[out_audio],
        api_description="Pre-rendered audio of a prototype ('label:k' or its index).",
    )
    # raw values (preprocess=False): the validator, not the sliders' own range check, answers out-of-range
    # API calls, so a client reads the same message as the browser shows next to the control
    sonify.click(
        handlers.sonify,
        [proto, steps, guidance, seed, sampler, state],
        [out_audio, out_caption],
        api_name="sonify",
        validator=handlers.validate_sonify,
        show_progress_on=[out_audio],
        preprocess=False,
        api_description="Decode a prototype with the diffusion decoder (steps, guidance, seed, sampler).",
        concurrency_limit=cfg.SONIFY_CONCURRENCY,
        concurrency_id="sonify",
    )

    @gr.render(inputs=[state])
    def gallery(name):
        try:
            groups = handlers.prototype_groups(name)
        except gr.Error as exc:
            gr.Markdown(f"**Cannot list prototypes:** {exc.message}")
            return
        if not any(path for _, items in groups for _, _, path in items):
            gr.Markdown("_This model ships no pre-rendered prototype audio; use **Re-sonify** above._")
            return
        for c, (label, items) in enumerate(groups):
            with gr.Accordion(f"{label} — {len(items)} prototypes", open=c < 2), gr.Row():
                for k, p, path in items:
                    gr.Audio(
                        value=path,
                        label=f"#{k} · p{p}",
                        type="filepath",
                        interactive=False,
                        buttons=["download"],
                        min_width=200,
                        key=f"proto-{name}-{p}",
                    )

    return proto


def _model_tab(
    handlers: Handlers, manager: ModelManager, state: gr.State, proto: gr.Dropdown, status: gr.Markdown
) -> list:
    with gr.Row(equal_height=False):
        selector = gr.Dropdown(
            choices=manager.choices(),
            value=manager.policy.startup_alias,
            label="Model name",
            allow_custom_value=True,
            scale=4,
            elem_id="model-select",
            info="Registry models load from the Hugging Face Hub (or its local cache); "
            "other Hub repos and model folders only where the operator allows them.",
        )
        with gr.Column(scale=1, min_width=160):
            load = gr.Button("Load model", variant="primary", elem_id="load-model")
            gr.Markdown("Switches the model of this browser session only.", elem_classes=["pecmae-caption"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            card = gr.Markdown(elem_classes=["pecmae-card"], label="Model card")
        with gr.Column(scale=2):
            overview = gr.Markdown(label="Overview")
            with gr.Accordion("Configuration (JSON)", open=False):
                config = gr.JSON(label="Configuration")
    load.click(
        handlers.load_model,
        [selector, state],
        [state, status, card, overview, config, proto],
        api_name="load_model",
        api_description="Switch this session to another model.",
        validator=handlers.validate_load,
        show_progress_on=[overview],  # in the Model tab, next to the button (not over the page header)
        concurrency_limit=None,  # a model in memory answers at once; ModelManager bounds the slow loads
    )

    return [card, overview, config]


def build_app(
    model_name: str | None = None,
    *,
    max_seconds: float | None = None,
    examples_dir: str | os.PathLike | None = None,
    prewarm: bool | None = None,
    device: str | None = None,
    allowed_models: str | list[str] | None = None,
    model_dirs: str | list[str] | None = None,
    max_upload_mb: float | None = None,
    file_ttl: float | None = None,
) -> gr.Blocks:
    """Build the app. Arguments override ``PECMAE_MODEL``, ``PECMAE_MAX_SECONDS``, ``PECMAE_EXAMPLES_DIR``,
    ``PECMAE_PREWARM``, ``PECMAE_DEVICE``, ``PECMAE_ALLOWED_MODELS``, ``PECMAE_MODEL_DIRS``,
    ``PECMAE_MAX_UPLOAD_MB`` and ``PECMAE_FILE_TTL`` (see :mod:`pecmae_hub.app.settings`).

    The start-up model is loaded now (a failure is shown in the app, which still starts); the example
    clips are then classified in the background so clicking one answers at once.
    """
    settings = cfg.AppSettings.from_env(
        model=model_name,
        max_seconds=max_seconds,
        prewarm=prewarm,
        device=device,
        examples_dir=examples_dir,
        allowed_models=allowed_models,
        model_dirs=model_dirs,
        max_upload_mb=max_upload_mb,
        file_ttl=file_ttl,
    )
    policy = ModelPolicy.from_env(settings.model, settings.allowed_models, settings.model_dirs)
    manager = ModelManager(settings.model, device=settings.device, policy=policy)
    handlers = Handlers(manager, settings)
    startup_error, choices = None, []
    try:
        manager.get()
        choices = handlers.prototype_choices(None)
        status_text = handlers.intro(None)
    except (ModelUnavailable, gr.Error) as exc:
        startup_error = f"The start-up model {policy.startup_alias!r} could not be loaded: {exc}"
        status_text = f"⚠️ {scrub_paths(startup_error)} Choose another model in the **Model** tab."
        log.error("the start-up model %s could not be loaded: %s", settings.model, exc)

    with gr.Blocks(title=TITLE, delete_cache=settings.delete_cache) as demo:  # uploads expire (PECMAE_FILE_TTL)
        state = gr.State(settings.model)
        with gr.Column(elem_classes=["pecmae-header"]):
            gr.Markdown(INTRO)
            status = gr.Markdown(status_text, label="Status", elem_classes=["pecmae-status"], elem_id="model-status")
        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                _classify_tab(handlers, settings, state)
            with gr.Tab("Prototypes", id="prototypes"):
                proto = _prototypes_tab(handlers, state, choices)
            with gr.Tab("Model", id="model"):
                model_outputs = _model_tab(handlers, manager, state, proto, status)
        demo.load(
            handlers.model_info,
            [state],
            model_outputs,
            api_name="model_info",
            api_description="Model card, overview (labels, metrics) and configuration of the session's model.",
        )
    demo.queue(default_concurrency_limit=cfg.CLASSIFY_CONCURRENCY)
    demo.launch = functools.partial(_launch, demo.launch, settings)  # offline-safe defaults for any caller
    demo.pecmae = handlers  # for tests and scripts
    if settings.prewarm and startup_error is None and settings.example_clips():
        threading.Thread(
            target=handlers.prewarm, args=(settings.example_clips(),), daemon=True, name="pecmae-prewarm"
        ).start()
    return demo


def _launch(launch, settings: cfg.AppSettings, *args, **kwargs):
    """``Blocks.launch`` with :func:`launch_options` and this app's upload limit as defaults."""
    kwargs.setdefault("max_file_size", settings.max_upload_bytes)
    return launch(*args, **launch_options(**kwargs))
