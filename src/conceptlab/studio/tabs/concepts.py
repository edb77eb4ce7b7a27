"""Concepts: the library of learned tokens and LoRAs; convert, delete, mix, and checked imports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conceptlab.errors import InputError
from conceptlab.studio import actions, library
from conceptlab.studio.ui import shown

if TYPE_CHECKING:
    from conceptlab.studio.app import Studio


def layout(gr) -> dict:
    w = {}
    w["refresh"] = gr.Button("Refresh the library", elem_id="concepts-refresh")
    w["table"] = gr.Dataframe(label="Learned tokens and LoRAs", interactive=False, elem_id="concepts-table")
    with gr.Row():
        with gr.Column():
            w["pick"] = gr.Dropdown([], allow_custom_value=True, label="Concept", elem_id="concepts-pick")
            w["meta"] = gr.JSON(label="Metadata", elem_id="concepts-meta")
            w["files"] = gr.File(label="Files", file_count="multiple", interactive=False)
            with gr.Row():
                w["format"] = gr.Dropdown(["diffusers", "a1111-pt", "a1111-safetensors", "kohya", "numpy"],
                                          value="a1111-safetensors", label="Convert to")
                w["rename"] = gr.Textbox(label="New token (optional)")
            with gr.Row():
                w["convert"] = gr.Button("Convert")
                w["delete"] = gr.Button("Delete", variant="stop")
        w["preview"] = gr.Image(label="Preview", type="filepath", elem_id="concepts-preview")
    gr.Markdown("**Mix two tokens** into a new one, and render the strip from the first to the second")
    with gr.Row():
        w["first"] = gr.Dropdown([], allow_custom_value=True, label="First")
        w["second"] = gr.Dropdown([], allow_custom_value=True, label="Second")
        w["weight"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Share of the second")
        w["method"] = gr.Radio(["lerp", "slerp"], value="lerp", label="Method")
        w["name"] = gr.Textbox(label="New token", value="<mix>")
    w["mix"] = gr.Button("Mix")
    w["strip"] = gr.Image(label="Interpolation strip (0%, 25%, 50%, 75%, 100% of the second)", type="filepath")
    with gr.Row():
        w["import_file"] = gr.File(label="Add an embedding or LoRA file (checked: pickles that run code are refused)",
                                   type="filepath")
        w["import_name"] = gr.Textbox(label="Name", value="imported")
        w["import"] = gr.Button("Add")
    w["note"] = gr.Markdown()
    return w


def wire(gr, studio: Studio, w: dict) -> None:
    import pandas as pd

    ws = studio.ws

    def table():
        rows = [c.summary() for c in library.list_concepts(ws)]
        names = [r["name"] for r in rows]
        tokens = [r["name"] for r in rows if r["kind"] == "embedding"]
        return (pd.DataFrame(rows or {"name": []}), gr.Dropdown(choices=names), gr.Dropdown(choices=tokens),
                gr.Dropdown(choices=tokens))

    listing = [w["table"], w["pick"], w["first"], w["second"]]
    w["refresh"].click(shown(table), None, listing, api_name="concepts")

    @shown
    def show(name):
        if not name:
            return None, None, None
        c = library.find(ws, name)
        files = sorted(str(p) for p in c.folder.iterdir() if p.is_file())
        return {**c.meta, "token": c.token, "kind": c.kind}, files, str(c.preview) if c.preview else None

    w["pick"].change(show, [w["pick"]], [w["meta"], w["files"], w["preview"]], api_name="concept")

    @shown
    def convert(name, fmt, token):
        path = library.convert(ws, _need_concept(name), fmt, (token or "").strip())
        return [str(path)], f"wrote {ws.relative(path)}"

    w["convert"].click(convert, [w["pick"], w["format"], w["rename"]], [w["files"], w["note"]], api_name="convert")

    @shown
    def delete(name):
        library.delete(ws, _need_concept(name))
        return (*table(), f"deleted {name}")

    w["delete"].click(delete, [w["pick"]], [*listing, w["note"]], api_name="delete")

    @shown
    def mix(first, second, weight, method, token):
        concept = actions.mix(ws, studio.cache, _need_concept(first), _need_concept(second), float(weight),
                              (token or "").strip(), method)
        return (*table(), str(concept.folder / "sweep.png"), f"mixed into {concept.token} ({concept.name})")

    w["mix"].click(mix, [w["first"], w["second"], w["weight"], w["method"], w["name"]],
                   [*listing, w["strip"], w["note"]], api_name="mix")

    @shown
    def add(path, name):
        if not path:
            raise InputError("file", None, "none uploaded", "Drop an embedding or LoRA file first")
        concept = library.import_file(ws, path, (name or "").strip())
        return (*table(), f"added {concept.kind} {concept.name}")

    w["import"].click(add, [w["import_file"], w["import_name"]], [*listing, w["note"]], api_name="import_concept")


def _need_concept(name: str | None) -> str:
    if not name:
        raise InputError("concept", None, "none selected", "Pick a concept from the list")
    return name
