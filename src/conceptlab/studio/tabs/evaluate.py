"""Evaluate: score a folder of the workspace with the judge or a trained classifier: tables, confusion matrices,
and the HTML report (served from the workspace, and downloadable)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conceptlab.errors import InputError
from conceptlab.studio import actions
from conceptlab.studio.ui import first_choice, shown

if TYPE_CHECKING:
    from conceptlab.studio.app import Studio


def layout(gr) -> dict:
    w = {}
    gr.Markdown("Score a folder of images: the sticker-world judge reads every attribute (accuracy where the "
                "folder says what each image should show: a world set's labels, or the prompts it was generated "
                "from), a classifier trained with `conceptlab classify train` says how many it recognizes, or, "
                "for any model, CLIP and DINO weights you have give CLIP-T, CLIP-I and DINO")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                w["folder"] = gr.Dropdown([], allow_custom_value=True, label="Folder", elem_id="evaluate-folder",
                                          info="a run's generations, an upload or an edit")
                w["refresh"] = gr.Button("Refresh", elem_id="evaluate-refresh", scale=0)
            with gr.Row():
                w["scorer"] = gr.Radio(["judge", "classifier", "clip and dino"], value="judge", label="Score with",
                                       elem_id="evaluate-scorer")
                w["classifier"] = gr.Textbox(label="Classifier", placeholder="the --out folder of classify train",
                                             elem_id="evaluate-classifier")
                w["expect"] = gr.Textbox(label="Expected label", placeholder="LABEL=VALUE for every image",
                                         info="empty: from the folder's prompts or labels")
            with gr.Row():
                w["clip"] = gr.Textbox("", label="CLIP model folder", elem_id="evaluate-clip",
                                       placeholder="a CLIPModel saved locally", info="clip and dino: CLIP-T, CLIP-I")
                w["dino"] = gr.Textbox("", label="DINO model folder", elem_id="evaluate-dino",
                                       placeholder="a ViT, e.g. dino-vits16", info="clip and dino: DINO")
                w["references"] = gr.Dropdown([], allow_custom_value=True, label="Reference pictures",
                                              elem_id="evaluate-references",
                                              info="a data set of the real subject, for CLIP-I and DINO")
                w["prompt"] = gr.Textbox("", label="Prompt", elem_id="evaluate-prompt",
                                         info="clip and dino: CLIP-T's text for every image (empty: each image's own)")
        with gr.Column(scale=1):
            w["files"] = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                 label="Or upload a folder of images", elem_id="evaluate-files", height=120)
            with gr.Row():
                w["set_name"] = gr.Textbox(label="Its name", value="to-score", scale=2)
                w["upload"] = gr.Button("Add", scale=1, elem_id="evaluate-upload")
    w["go"] = gr.Button("Score", variant="primary", elem_id="evaluate-button")
    w["summary"] = gr.Markdown(elem_id="evaluate-summary")
    with gr.Row():
        w["attributes"] = gr.Dataframe(label="Per attribute (or class)", interactive=False, elem_id="evaluate-table",
                                       scale=3)
        w["confusion"] = gr.Gallery(label="Confusion matrices (rows: expected, columns: read)", columns=2,
                                    object_fit="contain", height=320, elem_id="evaluate-confusion", scale=2)
    w["report"] = gr.File(label="HTML report (index.html)", elem_id="evaluate-report")
    w["images"] = gr.Dataframe(label="Per image", interactive=False, max_height=300)
    return w


def wire(gr, studio: Studio, w: dict) -> None:
    import pandas as pd

    @shown
    def score(folder, scorer, classifier, expect, clip="", dino="", references=None, prompt=""):
        if not folder:
            raise InputError("folder", None, "none selected", "Generate or upload images, then pick their folder")
        classifier = (classifier or "").strip() if scorer == "classifier" else None
        if scorer == "classifier" and not classifier:
            raise InputError("classifier", "", "no classifier given", "Type the --out folder of `classify train`")
        if scorer == "clip and dino":
            result = actions.similarity(studio.ws, folder, (clip or "").strip(), (dino or "").strip(),
                                        references or None, (prompt or "").strip() or None)
        else:
            result = actions.evaluate(studio.ws, folder, classifier, (expect or "").strip() or None)
        url = f"/gradio_api/file={result.report}"  # allowed: the report lies inside the workspace
        summary = (f"Scored **{len(result.per_image)}** images of `{folder}` into "
                   f"`{studio.ws.relative(result.folder)}` · [open the report]({url})")
        return summary, pd.DataFrame(result.per_attribute), [str(p) for p in result.confusion], str(result.report), \
            pd.DataFrame(result.per_image)

    outputs = [w["summary"], w["attributes"], w["confusion"], w["report"], w["images"]]
    w["go"].click(score, [w["folder"], w["scorer"], w["classifier"], w["expect"], w["clip"], w["dino"],
                          w["references"], w["prompt"]], outputs, api_name="evaluate")
    w["refresh"].click(lambda: (first_choice(gr, studio.ws.image_sets()), gr.Dropdown(choices=studio.ws.image_sets())),
                       None, [w["folder"], w["references"]], api_name=False)

    @shown
    def upload(files, name):
        folder = actions.store_upload(studio.ws, files, (name or "").strip())
        sets = studio.ws.image_sets()
        return gr.Dropdown(choices=sets, value=f"uploads/{folder.name}")

    w["upload"].click(upload, [w["files"], w["set_name"]], [w["folder"]], api_name="evaluate_upload")
