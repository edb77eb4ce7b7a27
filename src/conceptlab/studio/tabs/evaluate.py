"""Evaluate: a folder of the workspace scored by the sticker-world judge, per attribute and per image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conceptlab.errors import InputError
from conceptlab.studio import actions
from conceptlab.studio.ui import first_choice, shown

if TYPE_CHECKING:
    from conceptlab.studio.app import Studio


def layout(gr) -> dict:
    w = {}
    gr.Markdown("Score a folder of images with the sticker-world judge: what it reads in each attribute, and its "
                "accuracy where the folder has the world's labels")
    with gr.Row():
        w["folder"] = gr.Dropdown([], allow_custom_value=True, label="Folder", elem_id="evaluate-folder")
        w["refresh"] = gr.Button("Refresh", elem_id="evaluate-refresh")
        w["go"] = gr.Button("Score", variant="primary", elem_id="evaluate-button")
    w["attributes"] = gr.Dataframe(label="Per attribute", interactive=False, elem_id="evaluate-table")
    w["images"] = gr.Dataframe(label="Per image", interactive=False)
    return w


def wire(gr, studio: Studio, w: dict) -> None:
    import pandas as pd

    @shown
    def score(folder):
        if not folder:
            raise InputError("folder", None, "none selected", "Generate or upload images, then pick their folder")
        per_attribute, per_image = actions.score_folder(studio.ws, folder)
        return pd.DataFrame(per_attribute), pd.DataFrame(per_image)

    w["go"].click(score, [w["folder"]], [w["attributes"], w["images"]], api_name="evaluate")
    w["refresh"].click(lambda: first_choice(gr, studio.ws.image_sets()), None, [w["folder"]], api_name=False)
