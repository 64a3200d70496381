"""The Classify tab: the audio input and its examples, the answer (warning, headline, scores), the evidence,
"hear why" players, downloads and the wrong-prediction report.

A first-time user's path: the input box and the Classify button come first (on a phone, above the fold);
pressing Classify scrolls the headline into view, where the progress shows; a new or cleared input empties
every result, so nothing of the previous clip stays on screen; audio unlike the training data gets a
coloured warning above a headline that says "Best guess", with faded scores and bars.
"""

from __future__ import annotations

import gradio as gr

from pecmae_hub.app import settings as cfg
from pecmae_hub.app.handlers import PLACEHOLDER, Handlers
from pecmae_hub.app.reports import OTHER

HEAR_WHY = """#### Hear why
For each prototype that pushed hardest towards the answer: how it sounds, decoded by the model (the
PECMAE explanation), and the real training chunks closest to it (the APNet-style explanation). Listen
to them next to your clip."""
#: brings the headline (where the progress shows) into view as a run starts; on a refused input, the message
SCROLL_TO_ANSWER = """() => {
  const answer = document.getElementById('summary');
  const top = answer ? answer.getBoundingClientRect().top : 0;
  if (top > window.innerHeight * 0.5) window.scrollTo({top: top + window.scrollY - 12, behavior: 'instant'});
  let tries = 0;
  const refusedInView = setInterval(() => {
    const refused = document.querySelector('#classify-audio .validation-error');
    if (refused) refused.scrollIntoView({behavior: 'instant', block: 'center'});
    if (refused || ++tries > 20) clearInterval(refusedInView);
  }, 150);
}"""


def example_label(stem: str) -> str:
    """The button text of an example clip: its file name in words (``speech`` says what it is for)."""
    words = stem.replace("_", " ")
    return f"{words} (not an instrument)" if stem == "speech" else words


def share_buttons() -> list[str]:
    """Gradio's "share" works on Spaces only: elsewhere it breaks the player, so it is offered only there."""
    return ["share"] if cfg.on_spaces() else []


def _player(label: str, elem_id: str) -> gr.Audio:
    return gr.Audio(
        label=label,
        type="filepath",
        interactive=False,
        visible=False,
        buttons=["download", *share_buttons()],
        elem_id=elem_id,
        elem_classes=["pecmae-player"],
    )


def _top_prototype_column(i: int) -> list:
    """Caption, decoded prototype and nearest-chunk players of the i-th top prototype (hidden until used)."""
    with gr.Column(min_width=280):
        caption = gr.Markdown(
            label=f"Top prototype {i} caption", elem_classes=["pecmae-caption"], elem_id=f"top-caption-{i}"
        )
        proto = _player(f"Top prototype {i}", f"top-prototype-{i}")
        nearest = [
            _player(f"Top prototype {i}, closest training chunk {n}", f"nearest-{i}-{n}")
            for n in range(1, cfg.NEAREST_PLAYERS + 1)
        ]
    return [proto, *nearest, caption]


def _report_box(handlers: Handlers, audio: gr.Audio, details: gr.JSON, state: gr.State) -> gr.Dropdown:
    with gr.Accordion("Report a wrong prediction", open=False, elem_id="report"):
        gr.Markdown(
            "Tell the operator of this server what the clip really is. The report (the clip, the model's "
            "answer and yours) is saved on this server only; nothing is sent anywhere else.",
            elem_classes=["pecmae-caption"],
        )
        with gr.Row(equal_height=False):
            correct = gr.Dropdown(
                choices=handlers.report_choices(None)["choices"],
                label="What is it really?",
                elem_id="report-label",
                scale=2,
            )
            note = gr.Textbox(label="Note (optional)", max_lines=2, elem_id="report-note", scale=3)
        send = gr.Button("Send report", elem_id="report-send", size="sm")
        status = gr.Markdown(label="Report status", elem_id="report-status")
    send.click(
        handlers.report,
        [audio, details, correct, note],
        [status],
        api_name="report",
        api_description=f"Keep a report of a wrong prediction on this server (answer: a class or {OTHER!r}).",
        validator=handlers.validate_report,
        show_progress_on=[status],
        concurrency_limit=1,
        concurrency_id="report",
    )
    state.change(handlers.report_choices, [state], [correct], api_visibility="undocumented", queue=False)
    return correct


def classify_tab(handlers: Handlers, settings: cfg.AppSettings, state: gr.State) -> None:
    """Lay out the tab and wire its events (see the module docstring)."""
    limit = cfg.format_seconds(settings.max_seconds)
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=300):
            audio = gr.Audio(
                sources=["upload", "microphone"],
                type="filepath",
                label=f"Audio (up to {limit})",
                buttons=["download", *share_buttons()],
                elem_id="classify-audio",
            )
            button = gr.Button("Classify", variant="primary", elem_id="classify-button")
            clips = settings.example_clips()
            examples = None
            if clips:
                examples = gr.Examples(
                    examples=[[str(p)] for p in clips],
                    inputs=[audio],
                    example_labels=[example_label(p.stem) for p in clips],
                    label="Example clips: one per class, and one that is not music: click one to classify it",
                    examples_per_page=max(10, len(clips)),
                )
        with gr.Column(scale=5, min_width=300):
            warning = gr.HTML("", visible=False, label="Out-of-domain warning", elem_id="ood-warning")
            summary = gr.Markdown(PLACEHOLDER, label="Summary", elem_id="summary")
            score_bars = gr.HTML("", label="Class scores (bars)", elem_id="score-bars", padding=False)
            scores = gr.Label(label="Class scores", num_top_classes=5, visible=False, elem_id="scores")
            downloads = gr.File(
                label="This result as CSV and JSON",
                file_count="multiple",
                interactive=False,
                visible=False,
                elem_id="downloads",
            )
    explanation = gr.HTML(js_on_load=None, label="Explanation", elem_id="explanation", padding=True)
    gr.Markdown(HEAR_WHY)
    tops = []
    with gr.Row(equal_height=False):
        for i in range(1, settings.top_prototypes + 1):
            tops += _top_prototype_column(i)
    with gr.Accordion("Similarity of every chunk to every prototype", open=False):
        similarity = gr.HTML(js_on_load=None, label="Similarity map", elem_id="similarity", padding=True)
    with gr.Accordion("Details (JSON)", open=False):
        details = gr.JSON(label="Prediction", elem_id="details")
    _report_box(handlers, audio, details, state)

    outputs = [scores, summary, explanation, similarity, *tops, details, warning, score_bars, downloads]
    run = dict(
        validator=handlers.validate_classify,
        show_progress_on=[summary],
        concurrency_limit=cfg.CLASSIFY_CONCURRENCY,
        concurrency_id="classify",
    )
    # a new, cleared or recorded input empties every result at once (in the browser's order of events)
    clear = dict(api_visibility="undocumented", queue=False, show_progress="hidden")
    audio.input(handlers.clear_results, None, outputs, **clear)
    button.click(None, None, None, js=SCROLL_TO_ANSWER, queue=False)
    button.click(
        handlers.classify,
        [audio, state],
        outputs,
        api_name="classify",
        api_description="Classify an audio file with the session's model and explain the decision.",
        **run,
    ).failure(handlers.clear_results, None, outputs, **clear)  # a failed run leaves no older result behind
    if examples is not None:
        # results are memoised per (model, clip) and pre-computed for the start-up model (see docs/app.md)
        examples.load_input_event.then(None, None, None, js=SCROLL_TO_ANSWER, queue=False).then(
            handlers.clear_results, None, outputs, **clear
        ).then(handlers.classify, [audio, state], outputs, api_visibility="undocumented", **run)
