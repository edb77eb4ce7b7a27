"""Edit: Prompt-to-Prompt on a generated image or an uploaded photo inverted first, side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conceptlab.studio import actions
from conceptlab.studio.ui import shown, whole

if TYPE_CHECKING:
    from conceptlab.studio.app import Studio


def layout(gr, model: str) -> dict:
    w = {}
    with gr.Row():
        with gr.Column():
            w["source"] = gr.Textbox(label="Source prompt (with a photo: what it shows)",
                                     value="a sticker of a happy green broccoli", elem_id="edit-source")
            w["target"] = gr.Textbox(label="Target prompt", value="a sticker of a sad green broccoli",
                                     elem_id="edit-target")
            w["photo"] = gr.Image(label="Photo to edit (optional: inverted first)", type="filepath", height=220,
                                  elem_id="edit-photo")
            w["method"] = gr.Dropdown(["ddim", "negative-prompt", "null-text"], value="negative-prompt",
                                      label="Inversion", info="ddim: fast, loose; negative-prompt: fast, close; "
                                                              "null-text: exact, slow")
            w["concepts"] = gr.Dropdown([], allow_custom_value=True, multiselect=True, label="Concepts")
            w["model"] = gr.Textbox(label="Model", value=model, placeholder="shipped sticker base model")
        with gr.Column():
            w["mode"] = gr.Radio(["auto", "replace", "refine"], value="auto", label="Mode",
                                 info="replace swaps words one for one; refine adds or removes words")
            w["cross"] = gr.Slider(0, 1, value=0.8, step=0.05, label="Cross-attention steps",
                                   info="share of steps whose word maps come from the source (more keeps the layout)")
            w["self"] = gr.Slider(0, 1, value=0.4, step=0.05, label="Self-attention steps",
                                  info="share of steps whose self-attention comes from the source (more keeps the look)")
            with gr.Row():
                w["word"] = gr.Textbox(label="Re-weight word", placeholder="e.g. sad")
                w["scale"] = gr.Slider(-2, 4, value=1, step=0.1, label="Its weight", info="1 = unchanged")
            w["blend"] = gr.Textbox(label="Blend words", placeholder="words whose region may change, e.g. broccoli")
            w["blend_mask"] = gr.Radio(["attention", "difference"], value="attention", label="Blend mask")
            with gr.Row():
                w["seed"] = gr.Number(label="Seed", value=0, precision=0)
                w["steps"] = gr.Slider(1, 100, value=30, step=1, label="Steps", elem_id="edit-steps")
                w["guidance"] = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance")
    w["go"] = gr.Button("Edit", variant="primary", elem_id="edit-button")
    w["info"] = gr.Markdown(elem_id="edit-info")
    with gr.Row():
        w["gallery"] = gr.Gallery(label="Source and edit", columns=2, object_fit="contain", elem_id="edit-gallery")
        w["mask"] = gr.Image(label="Blend mask", type="filepath")
    return w


def wire(gr, studio: Studio, w: dict) -> None:
    from conceptlab.validation import WEIGHT

    @shown
    def run(source, target, photo, method, concepts, model, mode, cross, self_steps, word, scale, blend, blend_mask,
            seed, steps, guidance, progress=gr.Progress()):  # noqa: B008 - gradio's progress tracker
        progress(0, desc="inverting the photo" if photo else "editing")
        word = (word or "").strip()
        reweight = {word: WEIGHT.check("weight", scale)} if word else {}
        outcome = actions.edit(
            studio.ws, studio.cache, studio.inversions, source, target, model=(model or "").strip() or None,
            concepts=concepts, photo=photo, method=method, reweight=reweight, mode=mode, cross_steps=float(cross),
            self_steps=float(self_steps), blend=[b.strip() for b in (blend or "").split(",") if b.strip()],
            blend_mask=blend_mask, seed=whole("seed", seed), steps=whole("steps", steps), guidance=float(guidance))
        info = f"mode: **{outcome.mode}**"
        if outcome.psnr is not None:
            info += f" · {method} inversion: reconstruction PSNR **{outcome.psnr:.2f} dB**"
        files = [str(outcome.folder / "source.png"), str(outcome.folder / "edit.png")]
        return list(zip(files, outcome.labels)), str(outcome.mask) if outcome.mask else None, info

    inputs = [w[k] for k in ("source", "target", "photo", "method", "concepts", "model", "mode", "cross", "self",
                             "word", "scale", "blend", "blend_mask", "seed", "steps", "guidance")]
    w["go"].click(run, inputs, [w["gallery"], w["mask"], w["info"]], api_name="edit")
