"""The PECMAE Hub Gradio app: Classify, Prototypes and Model tabs over one :class:`ModelManager`.

``build_app()`` returns a ``gr.Blocks`` ready to launch; ``launch_options()`` gives the offline-safe
launch settings (theme, CSS, host/port from ``GRADIO_SERVER_*``, no share link), which are also bound
as defaults of the returned app's ``launch()``. Endpoints (``api_name``):

- ``/classify`` (audio file) → scores, headline, explanation (HTML), similarity map (HTML),
  3 × (decoded prototype WAV, 2 nearest-training-chunk WAVs, caption), details, out-of-domain warning
  (HTML), score bars (HTML), the result as CSV and JSON files
- ``/prototype_audio`` (prototype ``label:k`` or index) → pre-rendered WAV, caption
- ``/sonify`` (prototype, steps, guidance, seed) → freshly decoded WAV, caption
- ``/model_info`` () → model card, overview, configuration
- ``/load_model`` (model name) → status (with the model's intro), model card, overview, configuration,
  prototype choices
- ``/report`` (audio, prediction, correct label, note) → status: a wrong prediction kept on the server

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
from pecmae_hub.app.classify_tab import classify_tab
from pecmae_hub.app.handlers import Handlers
from pecmae_hub.app.models import ModelManager, ModelUnavailable
from pecmae_hub.app.plots import FIGURE_CSS
from pecmae_hub.app.prototypes_tab import prototypes_tab
from pecmae_hub.app.texts import CITATION, about_block, code_links

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
details.pecmae-about > summary {cursor: pointer; font-weight: 600;}
.pe-ood {display: flex; gap: 12px; align-items: flex-start; padding: 12px 14px; border-radius: 8px;
         border: 2px solid; border-left-width: 8px; font-size: 15px; line-height: 1.45;}
.pe-ood p {margin: 0 0 4px;}
.pe-ood-title {font-weight: 700; font-size: 16px;}
.pe-ood-icon {font-size: 26px; line-height: 1;}
.pe-ood-clear {background: #fff0f0; border-color: #c92a2a; color: #5c0b0b;}
.pe-ood-borderline {background: #fff6e0; border-color: #b35c00; color: #4a2800;}
"""
    + FIGURE_CSS
)
INTRO = """# PECMAE Hub
Music classification that shows **why**: each chunk of your audio is compared with sounds the model learned
for every class (its *prototypes*), which you can play, next to the real training recordings closest to them."""
#: on a narrow screen the model's introduction starts folded, so that the input and Classify come first
FOLD_INTRO_ON_PHONES = """() => {
  if (!window.matchMedia('(max-width: 720px)').matches) return;
  const fold = () => document.querySelectorAll('details.pecmae-about:not([data-folded])').forEach(d => {
    d.open = false; d.dataset.folded = '1';
  });
  fold();
  new MutationObserver(fold).observe(document.body, {childList: true, subtree: true});
}"""


def theme() -> gr.themes.Base:
    """The app theme (local fonts only: no request leaves the machine). Text meets WCAG AA (4.5:1): help and
    other subdued texts are slate-600 on white (7.6:1; the Soft theme's slate-400 gives 2.6:1), and the
    labels indigo-700 on their indigo-100 chips (6.3:1 instead of 3.6:1)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="blue", neutral_hue="slate").set(
        body_text_color_subdued="*neutral_600",
        body_text_color_subdued_dark="*neutral_300",
        block_info_text_color="*neutral_600",
        block_info_text_color_dark="*neutral_300",
        block_title_text_color="*primary_700",
        block_label_text_color="*primary_700",
        block_title_text_color_dark="*primary_200",
        block_label_text_color_dark="*primary_200",
    )


def launch_options(**overrides) -> dict:
    """Keyword arguments for ``Blocks.launch``: theme/CSS/JS, ``GRADIO_SERVER_NAME`` (default 127.0.0.1),
    ``GRADIO_SERVER_PORT``, no share link (and no hint about one: Gradio's own start-up lines are off, the
    app prints its address itself), errors shown to users, the upload limit (``PECMAE_MAX_UPLOAD_MB``);
    ``overrides`` win."""
    options = dict(
        theme=theme(),
        css=CSS,
        js=FOLD_INTRO_ON_PHONES,
        quiet=True,
        server_name=cfg.server_name(),
        server_port=cfg.server_port(),
        share=False,
        show_error=True,
        footer_links=["api", "gradio", "settings"],
        max_file_size=cfg.AppSettings.from_env().max_upload_bytes,
    )
    options.update(overrides)
    return options


def _model_tab(
    handlers: Handlers, manager: ModelManager, state: gr.State, proto: gr.Dropdown, status: gr.Markdown
) -> list:
    choices = manager.choices()
    if len(choices) < 2:  # nothing to switch to: say so instead of a selector with one entry
        gr.Markdown(
            f"This server offers one model, **{manager.policy.startup_alias}**: its card, classes and settings "
            "are below.",
            elem_id="model-single",
        )
    with gr.Row(equal_height=False, visible=len(choices) > 1):
        selector = gr.Dropdown(
            choices=choices,
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
        status_text = about_block(handlers.intro(None))
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
                classify_tab(handlers, settings, state)
            with gr.Tab("Prototypes", id="prototypes"):
                proto = prototypes_tab(handlers, state, choices)
            with gr.Tab("Model", id="model"):
                model_outputs = _model_tab(handlers, manager, state, proto, status)
        with gr.Accordion("About: paper, code and citation", open=False, elem_id="about"):
            gr.Markdown(code_links(), elem_id="links")
            gr.Code(CITATION, language=None, label="Cite PECMAE (BibTeX)", interactive=False, elem_id="citation")
        demo.load(
            handlers.model_info,
            [state],
            model_outputs,
            api_name="model_info",
            api_description="Model card, overview (labels, metrics) and configuration of the session's model.",
        )
    demo.queue(default_concurrency_limit=cfg.CLASSIFY_CONCURRENCY)
    demo.launch = functools.partial(_launch, demo, demo.launch, settings)  # offline-safe defaults for any caller
    demo.pecmae = handlers  # for tests and scripts
    if settings.prewarm and startup_error is None and settings.example_clips():
        threading.Thread(
            target=handlers.prewarm, args=(settings.example_clips(),), daemon=True, name="pecmae-prewarm"
        ).start()
    return demo


def _launch(demo: gr.Blocks, launch, settings: cfg.AppSettings, *args, **kwargs):
    """``Blocks.launch`` with :func:`launch_options` and this app's upload limit as defaults; prints the one
    line a user needs (the address) unless the caller asked for ``quiet``."""
    kwargs.setdefault("max_file_size", settings.max_upload_bytes)
    options = launch_options(**kwargs)
    block = not options.pop("prevent_thread_lock", False)
    result = launch(*args, prevent_thread_lock=True, **options)
    if not kwargs.get("quiet"):
        print(f"PECMAE Hub is running at {demo.local_url} (press Ctrl+C to stop)", flush=True)
    if block:
        demo.block_thread()
    return result
