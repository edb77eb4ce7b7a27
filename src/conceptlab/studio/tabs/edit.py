"""Edit: Prompt-to-Prompt on a generated image or an uploaded photo inverted first, side by side.

A slider per word of the target prompt re-weights that word (the CLI's --reweight WORD=SCALE; 1 = unchanged);
the blend mask and, when asked, each prompt's per-word attention maps (`conceptlab attention`) are shown. The
region that may change is painted over the picture (the photo, or the last generated source), or uploaded as a
white-on-black mask: the CLI's --mask, with --mask-paste, --mask-noise and --blend-start beside it.
"""

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
            w["target"] = gr.Textbox(label="Target prompt", value=TARGET, elem_id="edit-target",
                                     info="each of its words gets a weight slider")
            w["photo"] = gr.Image(label="Photo to edit (optional: inverted first)", type="filepath", height=220,
                                  elem_id="edit-photo")
            w["region"] = gr.ImageEditor(label="Region that may change (optional): paint over the picture, or upload "
                                               "a white-on-black mask", type="pil", image_mode="RGBA", height=260,
                                         elem_id="edit-region", sources=["upload"], format="png", layers=False,
                                         transforms=(), brush=gr.Brush(default_size=8, colors=[PAINT],
                                                                  color_mode="fixed"))
            with gr.Row():
                w["paste"] = gr.Checkbox(label="Paste the source back outside the region", value=False,
                                         elem_id="edit-paste", info="after decoding: the source's own pixels there")
                w["seam"] = gr.Slider(0, 8, value=2, step=1, label="Seam (px)", elem_id="edit-seam",
                                      info="how soft the pasted edge is")
            with gr.Row():
                w["noise"] = gr.Slider(0, 1, value=0, step=0.05, label="Fresh noise inside the region",
                                       elem_id="edit-noise", info="1: the target lays out the region anew")
                w["start"] = gr.Slider(0, 1, value=0, step=0.05, label="Region applies from", elem_id="edit-start",
                                       info="share of the steps drawn freely first (with paste, 1 is fine)")
            w["method"] = gr.Dropdown(["direct", "negative-prompt", "null-text", "ddim"], value="direct",
                                      label="Inversion", info="direct: exact source, fast (Ju et al. 2024); "
                                                              "negative-prompt: fast, close; null-text: exact, slow; "
                                                              "ddim: fast, loose")
            w["concepts"] = gr.Dropdown([], allow_custom_value=True, multiselect=True, label="Concepts")
            with gr.Row():
                w["loras"] = gr.Dropdown([], allow_custom_value=True, multiselect=True, label="LoRAs",
                                         elem_id="edit-loras", info="a DreamBooth or pivotal-tuning subject")
                w["lora_scale"] = gr.Slider(-2, 2, value=1.0, step=0.05, label="LoRA scale")
            w["model"] = gr.Textbox(label="Model", value=model, placeholder="shipped sticker base model")
        with gr.Column():
            w["mode"] = gr.Radio(["auto", "replace", "refine"], value="auto", label="Mode",
                                 info="replace swaps words one for one; refine adds or removes words")
            w["cross"] = gr.Slider(0, 1, value=0.8, step=0.05, label="Cross-attention steps",
                                   info="share of steps whose word maps come from the source (more keeps the layout)")
            w["self"] = gr.Slider(0, 1, value=0.4, step=0.05, label="Self-attention steps",
                                  info="share of steps whose self-attention comes from the source (more keeps the look)")
            gr.Markdown("**Re-weight words** of the target prompt: 1 leaves a word as it is, more strengthens it, "
                        "less weakens it, below 0 pushes it away")
            w["words"] = gr.State(words_of(TARGET))
            with gr.Row(elem_id="edit-weights"):  # wraps: a few sliders a line
                w["weights"] = [gr.Slider(-2, 4, value=1, step=0.1, label=word, visible=True, min_width=150,
                                          elem_id=f"edit-weight-{k}", elem_classes="edit-weight")
                                for k, word in enumerate(words_of(TARGET))]
                w["weights"] += [gr.Slider(-2, 4, value=1, step=0.1, label="", visible=False, min_width=150,
                                           elem_id=f"edit-weight-{k}", elem_classes="edit-weight")
                                 for k in range(len(w["weights"]), MAX_WORDS)]
            w["blend"] = gr.Textbox(label="Blend words", placeholder="words whose region may change, e.g. broccoli",
                                    elem_id="edit-blend", info="only where these words attend may the image change")
            w["blend_mask"] = gr.Radio(["attention", "difference"], value="attention", label="Blend mask",
                                       elem_id="edit-blend-mask",
                                       info="attention: the blend words' maps; difference: where source and edit "
                                            "drift apart (no words needed)")
            with gr.Row():
                w["seed"] = gr.Number(label="Seed", value=0, precision=0)
                w["steps"] = gr.Slider(1, 100, value=30, step=1, label="Steps", elem_id="edit-steps")
                w["guidance"] = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance")
            w["attention"] = gr.Checkbox(label="Per-word attention maps", value=False, elem_id="edit-attention",
                                         info="of the source and target prompts from this seed (one more image each)")
    w["go"] = gr.Button("Edit", variant="primary", elem_id="edit-button")
    w["info"] = gr.Markdown(elem_id="edit-info")
    with gr.Row():
        w["gallery"] = gr.Gallery(label="Source and edit", columns=2, object_fit="contain", height=300,
                                  elem_id="edit-gallery", scale=2)
        w["mask"] = gr.Image(label="Blend mask over the edit (dimmed: kept from the source)", type="filepath", height=300,
                             elem_id="edit-mask", scale=1)
    w["maps"] = gr.Image(label="Per-word attention maps (source above, target below)", type="filepath",
                         elem_id="edit-maps")
    return w


TARGET = "a sticker of a sad green broccoli"
PAINT = ("#ff3b6b", 0.5)  # the region brush, see-through: any painted pixel counts, whatever its colour
MAX_WORDS = 16  # sliders on the page; a longer prompt's later words keep weight 1


def words_of(prompt: str | None) -> list[str]:
    """The distinct words of a prompt in order, as --reweight names them ('sad', not 'sad,')."""
    seen = []
    for word in (prompt or "").split():
        word = word.strip(".,!?;:\"'()")
        if word and word.lower() not in (w.lower() for w in seen):
            seen.append(word)
    return seen[:MAX_WORDS]


def reweighting(target: str, weights) -> dict[str, float]:
    """{word: weight} for the sliders moved away from 1 (slider k is word k of the target)."""
    from conceptlab.validation import WEIGHT

    return {word: WEIGHT.check(f"weight of {word!r}", float(weight))
            for word, weight in zip(words_of(target), weights) if weight is not None and float(weight) != 1.0}


def painted_region(value, guide=None):
    """(H, W) bool of where the edit may change the picture, from the region editor's value: every pixel painted
    on any layer, or, with nothing painted, an uploaded white-on-black mask (white: may change; not transparent:
    the editor flattens a picture on white); None for neither. `guide`: the picture the studio put under the
    brush (the photo), which is never read as a mask, even when it is black and white."""
    import numpy as np

    if not value:
        return None
    strokes = [np.asarray(layer.convert("RGBA"))[..., 3] > 0 for layer in value.get("layers") or [] if layer is not None]
    if any(s.any() for s in strokes):
        return np.logical_or.reduce(strokes)
    background = value.get("background")
    if background is None:
        return None
    rgb = np.asarray(background.convert("RGB"), dtype=int)  # (H, W, 3)
    if guide is not None:
        from conceptlab.imaging import open_rgb

        under = np.asarray(open_rgb(guide), dtype=int)
        if under.shape == rgb.shape and np.abs(under - rgb).max() <= 2:  # the photo itself, not an uploaded mask
            return None
    grey = rgb.mean(axis=2)
    two_tone = (np.ptp(rgb, axis=2) <= 8).all() and ((grey <= 16) | (grey >= 239)).all()
    return grey >= 128 if two_tone and (grey >= 128).any() else None


def region_settings(value, paste: bool, seam, noise, start, guide=None, blend: str = "",
                    blend_mask: str = "attention") -> dict:
    """The library's region settings (mask, mask_paste, mask_noise, blend_start) from the region widgets; an
    InputError names the widget that needs a painted region, or that says where the picture may change too."""
    from conceptlab.errors import InputError

    region = painted_region(value, guide)
    if region is not None and (blend.strip() or blend_mask == "difference"):
        other = "Blend words" if blend.strip() else "Blend mask"
        raise InputError("Region that may change", "painted", f"and {other} both say where the picture may change",
                         "Clear the blend words and choose the attention blend mask, or erase the region")
    if region is None:
        for label, on in (("Paste the source back", paste), ("Fresh noise inside the region", noise),
                          ("Region applies from", start)):
            if on:
                raise InputError(label, "on" if on is True else on, "acts on a region, and none is painted",
                                 "Paint the region over the picture, or turn this off")
        return {}
    return {"region": region, "mask_paste": float(seam) if paste else None, "mask_noise": float(noise or 0),
            "blend_start": float(start or 0)}


def wire(gr, studio: Studio, w: dict) -> None:
    @shown
    def run(source, target, photo, method, concepts, model, mode, cross, self_steps, *rest, progress=gr.Progress()):  # noqa: B008 - gradio's progress tracker
        weights, (blend, blend_mask, seed, steps, guidance, maps, region, *place, loras, lora_scale) = \
            rest[:MAX_WORDS], rest[MAX_WORDS:]
        progress(0, desc="inverting the photo" if photo else "editing")
        model, seed, steps = (model or "").strip() or None, whole("seed", seed), whole("steps", steps)
        lora_scale = float(lora_scale if lora_scale is not None else 1)
        outcome = actions.edit(
            studio.ws, studio.cache, studio.inversions, source, target, model=model, concepts=concepts, photo=photo,
            loras=loras, lora_scale=lora_scale,
            method=method, reweight=reweighting(target, weights), mode=mode, cross_steps=float(cross),
            self_steps=float(self_steps), blend=[b.strip() for b in (blend or "").split(",") if b.strip()],
            blend_mask=blend_mask, seed=seed, steps=steps, guidance=float(guidance),
            **region_settings(region, *place, guide=photo, blend=blend or "", blend_mask=blend_mask))
        info = f"mode: **{outcome.mode}**"
        if outcome.reweight:
            info += " · re-weighted: " + ", ".join(f"{k} x{v:g}" for k, v in outcome.reweight.items())
        if outcome.psnr is not None:
            info += f" · {method} inversion: reconstruction PSNR **{outcome.psnr:.2f} dB**"
        sheet = None
        if maps:
            progress(0.5, desc="attention maps")
            sheet = actions.attention(studio.ws, studio.cache, {"source": source, "target": target}, outcome.folder,
                                      model=model, concepts=concepts, seed=seed, steps=steps, guidance=float(guidance),
                                      loras=loras, lora_scale=lora_scale)
            if photo:
                info += " · attention maps: of the prompts from this seed, not of the photo"
        if outcome.region is not None:
            info += " · inside the painted region"
        files = [str(outcome.folder / "source.png"), str(outcome.folder / "edit.png")]
        # nothing painted and no photo: the generated source goes under the brush, to paint the next edit's region
        guide = gr.ImageEditor(value={"background": files[0], "layers": [], "composite": files[0]}) \
            if not photo and painted_region(region, photo) is None else gr.ImageEditor()
        return list(zip(files, outcome.labels)), str(outcome.mask) if outcome.mask else None, \
            str(sheet) if sheet else None, info, guide

    inputs = [w[k] for k in ("source", "target", "photo", "method", "concepts", "model", "mode", "cross", "self")]
    inputs += w["weights"] + [w[k] for k in ("blend", "blend_mask", "seed", "steps", "guidance", "attention",
                                             "region", "paste", "seam", "noise", "start", "loras", "lora_scale")]
    w["go"].click(run, inputs, [w["gallery"], w["mask"], w["maps"], w["info"], w["region"]], api_name="edit")

    def under_the_brush(photo):
        """A new photo goes under the region brush (its strokes start afresh)."""
        return {"background": photo, "layers": [], "composite": photo} if photo else None

    w["photo"].change(under_the_brush, [w["photo"]], [w["region"]], api_name=False, show_progress="hidden",
                      queue=False)

    def relabel(target, old_words, *weights):
        """One slider per word of the new target; a word that stays keeps its weight."""
        kept = {word.lower(): weight for word, weight in zip(old_words or [], weights)}
        words = words_of(target)
        sliders = [gr.Slider(label=words[k], value=kept.get(words[k].lower(), 1), visible=True) if k < len(words)
                   else gr.Slider(label="", value=1, visible=False) for k in range(MAX_WORDS)]
        return words, *sliders

    w["target"].change(relabel, [w["target"], w["words"], *w["weights"]], [w["words"], *w["weights"]],
                       api_name=False, show_progress="hidden", queue=False)
