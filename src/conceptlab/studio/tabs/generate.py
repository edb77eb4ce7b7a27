"""Generate: a prompt and its settings -> seeded images, each with its settings shown and embedded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conceptlab.errors import InputError
from conceptlab.studio import actions
from conceptlab.studio.ui import pixels, shown, whole

if TYPE_CHECKING:
    from conceptlab.studio.app import Studio


def layout(gr, schedulers, model: str) -> dict:
    w = {}
    with gr.Row():
        with gr.Column(scale=2):
            w["prompt"] = gr.Textbox(label="Prompt", value="a sticker of a happy green broccoli", lines=2)
            w["negative"] = gr.Textbox(label="Negative prompt", placeholder="what to steer away from")
            with gr.Row():
                w["seed"] = gr.Number(label="Seed", value=0, precision=0, info="image i uses seed + i")
                w["n"] = gr.Slider(1, 16, value=4, step=1, label="Images")
                w["steps"] = gr.Slider(1, 150, value=30, step=1, label="Steps", elem_id="generate-steps")
                w["guidance"] = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance")
            with gr.Row():
                w["scheduler"] = gr.Dropdown(["default", *schedulers], value="default", label="Scheduler")
                w["width"] = gr.Number(label="Width", value=0, precision=0, info="0 = the model's size")
                w["height"] = gr.Number(label="Height", value=0, precision=0, info="0 = the model's size")
        with gr.Column(scale=1):
            w["model"] = gr.Textbox(label="Model", value=model, placeholder="shipped sticker base model",
                                    info="a diffusers folder, .safetensors file or hub id; empty = the shipped model")
            w["concepts"] = gr.Dropdown([], allow_custom_value=True, multiselect=True,
                                        label="Concepts (their tokens may be used in the prompt)")
            w["loras"] = gr.Dropdown([], allow_custom_value=True, multiselect=True, label="LoRAs")
            w["lora_scale"] = gr.Slider(-2, 2, value=1.0, step=0.05, label="LoRA scale")
    w["go"] = gr.Button("Generate", variant="primary", elem_id="generate-button")
    w["gallery"] = gr.Gallery(label="Images", columns=4, object_fit="contain", elem_id="generate-gallery")
    w["rows"] = gr.State([])
    w["picked"] = gr.State(None)
    with gr.Row():
        w["settings"] = gr.JSON(label="Settings of the selected image (also embedded in the file)",
                                elem_id="generate-settings")
        w["to_edit"] = gr.Button("Send selected to Edit", elem_id="generate-to-edit")
    return w


def wire(gr, studio: Studio, w: dict, e: dict, tabs) -> None:
    from conceptlab.generation.generate import GenerationConfig

    @shown
    def run(prompt, negative, seed, n, steps, guidance, scheduler, width, height, model, concepts, loras, scale,
            progress=gr.Progress()):  # noqa: B008 - how gradio hands a handler its progress tracker
        progress(0, desc="loading the model")
        cfg = GenerationConfig(prompt=prompt, negative_prompt=negative or "", n=whole("images", n),
                               seed=whole("seed", seed), steps=whole("steps", steps), guidance=float(guidance),
                               scheduler=None if scheduler in (None, "default") else scheduler,
                               width=pixels(width), height=pixels(height))
        rows = actions.generate(studio.ws, studio.cache, cfg, model=(model or "").strip() or None,
                                concepts=concepts, loras=loras, lora_scale=scale)
        kept = [{**r, "path": str(r["path"])} for r in rows]  # the state keeps where each file is
        shown = [{k: v for k, v in r.items() if k != "path"} for r in rows]  # gradio reads 'path' as a file
        return [(r["path"], actions.caption(r)) for r in kept], kept, shown[0] if shown else None, \
            kept[0] if kept else None

    inputs = [w[k] for k in ("prompt", "negative", "seed", "n", "steps", "guidance", "scheduler", "width", "height",
                             "model", "concepts", "loras", "lora_scale")]
    outputs = [w["gallery"], w["rows"], w["settings"], w["picked"]]
    w["go"].click(run, inputs, outputs, api_name="generate")
    w["prompt"].submit(run, inputs, outputs, api_name=False)

    def pick(rows, evt):
        row = rows[evt.index] if rows and evt.index is not None and evt.index < len(rows) else None
        return ({k: v for k, v in row.items() if k != "path"} if row else None), row

    pick.__annotations__ = {"evt": gr.SelectData}  # how gradio knows to pass the event (gr is imported late)

    w["gallery"].select(pick, [w["rows"]], [w["settings"], w["picked"]], api_name=False)

    @shown
    def send(row):
        if not row:
            raise InputError("image", None, "none selected", "Click an image in the gallery first")
        return row["path"], row["prompt"], gr.Tabs(selected="edit")

    w["to_edit"].click(send, [w["picked"]], [e["photo"], e["source"], tabs], api_name=False)
