"""The Prototypes tab: every prototype of the session's model, playable, and a form to decode one again with
other settings (sampler, steps, guidance, seed).

Prototypes are named ``violin — prototype 2 of 3`` (the API value stays ``violin:1``). The steps follow the
sampler (UniPC 14, the exact upstream sampler 40, ...: :data:`pecmae_hub.sampling.schedulers.RECOMMENDED_STEPS`)
and every caption names the sampler it used.
"""

from __future__ import annotations

import gradio as gr

from pecmae_hub.app import settings as cfg
from pecmae_hub.app.checks import MAX_STEPS, SAMPLERS
from pecmae_hub.app.classify_tab import share_buttons
from pecmae_hub.app.handlers import Handlers
from pecmae_hub.app.plots import prototype_label
from pecmae_hub.sampling.schedulers import DEFAULT_SCHEDULER, RECOMMENDED_STEPS

_SAMPLER_NAMES = {"unipc": "UniPC (fast)", "upstream": "Exact upstream sampler", "dpmsolver++": "DPM-Solver++"}
SAMPLER_CHOICES = [(f"{_SAMPLER_NAMES.get(s, s.upper())}, {RECOMMENDED_STEPS[s]} steps", s) for s in SAMPLERS]


def steps_for(sampler: str | None):
    """The steps slider set to the recommended steps of ``sampler``."""
    return gr.update(value=RECOMMENDED_STEPS.get(str(sampler or DEFAULT_SCHEDULER), RECOMMENDED_STEPS["unipc"]))


def prototypes_tab(handlers: Handlers, state: gr.State, choices: list) -> gr.Dropdown:
    """Lay out the tab and wire its events; returns the prototype selector (the Model tab updates it)."""
    intro = (
        "Every prototype of the model, grouped by class, as pre-rendered by the diffusion decoder. "
        "Pick one below to decode it again with other settings."
    )
    gr.Markdown(intro, elem_id="prototypes-intro")
    note = gr.Markdown(handlers.prototypes_note(None), elem_id="prototypes-note", elem_classes=["pecmae-caption"])
    state.change(handlers.prototypes_note, [state], [note], api_visibility="undocumented", queue=False)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            proto = gr.Dropdown(
                choices=choices,
                value=choices[0][1] if choices else None,
                label="Prototype",
                allow_custom_value=True,
                elem_id="prototype-select",
                info="A class and one of its prototypes (through the API: 'violin:0' is violin's first).",
            )
            sampler = gr.Dropdown(
                choices=SAMPLER_CHOICES,
                value=DEFAULT_SCHEDULER,
                label="Sampler",
                elem_id="sonify-scheduler",
                info="How the decoder steps through the noise levels: UniPC reaches the exact sampler's quality "
                "in about a third of the steps; 'Exact' reproduces the upstream code. Choosing one sets its steps.",
            )
            steps = gr.Slider(
                1,
                MAX_STEPS,
                value=RECOMMENDED_STEPS[DEFAULT_SCHEDULER],
                step=1,
                label="Diffusion steps",
                elem_id="sonify-steps",
                info="How many denoising passes the decoder makes: more is slower and usually cleaner.",
            )
            guidance = gr.Slider(
                0.0,
                10.0,
                value=1.0,
                step=0.1,
                label="Guidance",
                elem_id="sonify-guidance",
                info="How strongly the decoder follows the prototype: 0 = plain decoding, "
                "higher exaggerates what is typical of it (the pre-rendered audio used 1).",
            )
            seed = gr.Number(
                value=0,
                precision=0,
                minimum=0,
                label="Seed",
                elem_id="sonify-seed",
                info="The random starting noise: the same seed gives the same audio.",
            )
            with gr.Row():
                play = gr.Button("Play pre-rendered", elem_id="play-prototype")
                sonify = gr.Button("Re-sonify", variant="primary", elem_id="sonify-button")
        with gr.Column(scale=3, min_width=300):
            out_audio = gr.Audio(
                label="Prototype audio",
                type="filepath",
                interactive=False,
                buttons=["download", *share_buttons()],
                elem_id="prototype-audio",
            )
            out_caption = gr.Markdown(
                label="Prototype caption", elem_classes=["pecmae-caption"], elem_id="prototype-caption"
            )
    sampler.input(steps_for, [sampler], [steps], api_visibility="undocumented", queue=False)
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
                        label=prototype_label(label, k, len(items)),
                        type="filepath",
                        interactive=False,
                        buttons=["download", *share_buttons()],
                        min_width=200,
                        key=f"proto-{name}-{p}",
                    )

    return proto
