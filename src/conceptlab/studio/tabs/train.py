"""Train: images in, a textual-inversion, DreamBooth/LoRA or pivotal-tuning job started, cancelled or resumed,
its progress live."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from conceptlab.errors import InputError
from conceptlab.studio import actions
from conceptlab.studio.jobs import Advanced, DreamBoothSettings, PivotalSettings, TrainSettings
from conceptlab.studio.progress import loss_rows, read_progress
from conceptlab.studio.ui import shown, whole

if TYPE_CHECKING:
    from conceptlab.studio.app import Studio

REFRESH_SECONDS = 1.0
LOG_LINES = 30


def layout(gr, model: str) -> dict:
    d, w = TrainSettings.defaults(), {}
    with gr.Row():
        with gr.Column():
            gr.Markdown("**1. Images** — drop 3-12 pictures of the concept (with a caption each as NAME.txt, if "
                        "you have them), or draw a set from the sticker world")
            w["files"] = gr.File(file_count="multiple", file_types=["image", ".txt"], type="filepath", label="Pictures",
                                 elem_id="train-files")
            w["set_name"] = gr.Textbox(label="Data set name", value="my-concept")
            w["upload"] = gr.Button("Add these pictures")
            with gr.Row():
                w["world_object"] = gr.Dropdown(_world_objects(), value="broccoli", label="Sticker-world object")
                w["world_n"] = gr.Slider(2, 12, value=4, step=1, label="Pictures")
            w["world"] = gr.Button("Draw a set from the sticker world", elem_id="draw-world")
            w["note"] = gr.Markdown()
            w["images"] = gr.Dropdown([], allow_custom_value=True, label="Training images (a data set of the workspace)",
                                      elem_id="train-images")
        with gr.Column():
            with gr.Tabs(selected="ti"):
                with gr.Tab("Textual inversion", id="ti"):
                    _ti_layout(gr, w)
                with gr.Tab("DreamBooth / LoRA", id="dreambooth", elem_id="train-dreambooth-tab"):
                    _dreambooth_layout(gr, w)
                with gr.Tab("Pivotal tuning", id="pivotal", elem_id="train-pivotal-tab"):
                    _pivotal_layout(gr, w)
            _advanced_layout(gr, w)
            with gr.Row():
                w["every"] = gr.Number(label="Checkpoint and preview every", value=d.checkpoint_every, precision=0,
                                       elem_id="train-every", info="steps; resume continues from the last checkpoint")
                w["seed"] = gr.Number(label="Seed", value=d.seed, precision=0)
            w["model"] = gr.Textbox(label="Model", value=model, placeholder="shipped sticker base model")
            with gr.Row():
                w["cancel"] = gr.Button("Cancel", elem_id="train-cancel")
                w["resume"] = gr.Button("Resume", elem_id="train-resume")
    w["job"] = gr.Dropdown([], allow_custom_value=True, label="Job", elem_id="train-job")
    w["status"] = gr.Markdown("No job yet.", elem_id="train-status")
    with gr.Row():
        w["plot"] = gr.LinePlot(x="step", y="loss", title="Loss", height=240)
        w["preview"] = gr.Image(label="Latest preview", type="filepath", height=240, elem_id="train-preview")
    w["log"] = gr.Textbox(label="Log", lines=8, max_lines=12, autoscroll=True)
    w["jobs"] = gr.Dataframe(label="Jobs", interactive=False)
    with gr.Accordion("Soup of finished runs", open=False) as w["soup_box"]:
        gr.Markdown("The weighted mean of runs trained alike with different seeds (a model soup): each run's own "
                    "errors partly cancel. All full fine-tunes, or all DreamBooth LoRAs (souped by their products).")
        with gr.Row():
            w["soup_runs"] = gr.Dropdown([], multiselect=True, allow_custom_value=True, label="Runs",
                                         elem_id="soup-runs")
            w["soup_weights"] = gr.Textbox(label="Weights", placeholder="equal; e.g. 2,1,1")
            w["soup_name"] = gr.Textbox(label="Soup name", value="soup")
        w["soup"] = gr.Button("Make the soup", elem_id="soup-make")
        w["soup_note"] = gr.Markdown(elem_id="soup-note")
    # ticks only while a job is queued or running (keep_ticking): an idle page, and a page while it loads, do
    # no refresh work (a ticking timer slowed the first load; see benchmarks/bench_studio.py)
    w["timer"] = gr.Timer(REFRESH_SECONDS, active=False)
    return w


def _ti_layout(gr, w: dict) -> None:
    d = TrainSettings.defaults()
    gr.Markdown("**2. Textual inversion** — learns a new word for the concept; the model stays as it is")
    w["token"] = gr.Textbox(label="Token", value="<my-concept>", info="the new word, e.g. <my-cat>",
                            elem_id="train-token")
    w["init"] = gr.Textbox(label="Init word", value="", info="a word it starts from, e.g. cat (empty: random)")
    with gr.Row():
        w["steps"] = gr.Number(label="Steps", value=d.steps, precision=0, elem_id="train-steps",
                               info="optimizer steps; 500 is the library's default")
        w["lr"] = gr.Number(label="Learning rate", value=d.lr, info="5e-3 is usual for textual inversion")
        w["batch"] = gr.Number(label="Batch size", value=d.batch_size, precision=0, info="images per step",
                               elem_id="train-batch")
    w["start"] = gr.Button("Start textual inversion", variant="primary", elem_id="train-start")


def _dreambooth_layout(gr, w: dict) -> None:
    d = DreamBoothSettings.defaults()
    gr.Markdown("**2. DreamBooth** — teaches the model a subject under a rare word and its class; with LoRA only "
                "small adapters are trained (a file of a few MB), without it every UNet weight (a whole model)")
    with gr.Row():
        w["db_identifier"] = gr.Textbox(label="Identifier", value="tuki", elem_id="db-identifier",
                                        info="a rare word that names the subject: tuki, sks, bnh")
        w["db_class"] = gr.Textbox(label="Class", value="broccoli", elem_id="db-class",
                                   info="what it is; prompts say 'a tuki broccoli'")
    with gr.Row():
        w["db_lora"] = gr.Checkbox(label="LoRA", value=d.lora, elem_id="db-lora",
                                   info="off: full fine-tune (slow, large)")
        w["db_rank"] = gr.Number(label="LoRA rank", value=d.rank, precision=0, elem_id="db-rank",
                                 info="4 is the library's default; 8-16 hold more detail")
        w["db_text"] = gr.Checkbox(label="Train the text encoder", value=d.train_text_encoder, elem_id="db-text",
                                   info="learns the words too; more faithful, easier to overfit")
        w["db_te_lr"] = gr.Number(label="Text-encoder learning rate", value=d.text_encoder_lr, elem_id="db-te-lr",
                                  info=TE_LR_INFO)
    with gr.Row():
        w["db_prior"] = gr.Checkbox(label="Prior preservation", value=d.prior_preservation, elem_id="db-prior",
                                    info="also trains on class images the model draws, so the class keeps its meaning")
        w["db_class_images"] = gr.Number(label="Class images", value=d.class_images, precision=0,
                                         info="drawn once per class and reused")
        w["db_prior_weight"] = gr.Number(label="Prior weight", value=d.prior_weight, info="their loss's weight")
    with gr.Row():
        w["db_steps"] = gr.Number(label="Steps", value=d.steps, precision=0, elem_id="db-steps",
                                  info="400 is the library's default")
        w["db_lr"] = gr.Number(label="Learning rate", value=d.lr, info="1e-4 is usual for DreamBooth and LoRA")
        w["db_batch"] = gr.Number(label="Batch size", value=d.batch_size, precision=0, elem_id="db-batch")
    with gr.Row():
        w["db_ema"] = gr.Number(label="EMA decay", value=d.ema_decay, elem_id="db-ema",
                                info="keeps a moving average of the weights and saves it; 0 is off, 0.99-0.999 usual")
        w["db_caption_dropout"] = gr.Number(label="Caption dropout", value=d.caption_dropout,
                                            elem_id="db-caption-dropout", info=DROPOUT_INFO)
    w["db_more"] = gr.Textbox("", label="More subjects in the same run, one a line", lines=2, elem_id="db-more",
                              placeholder="bnh=bnh-pictures,class=monster,prior_weight=0.3", info=MORE_INFO)
    w["db_start"] = gr.Button("Start DreamBooth", variant="primary", elem_id="db-start")


MORE_INFO = ("ID=DATA SET,class=WORD, the data set one added above; options: captions=WORD (default: the "
             "Advanced captions word, if set), prior_weight=W, class_prompts=class|captions")
TE_LR_INFO = "with the text-encoder box: its own learning rate, e.g. a tenth of the learning rate; 0: the same"
DROPOUT_INFO = ("with captions (Advanced, or a subject's captions=WORD): the share of examples trained on the bare "
                "'a ID CLASS' instead, e.g. 0.3; 0 is off")


def _pivotal_layout(gr, w: dict) -> None:
    d = PivotalSettings.defaults()
    gr.Markdown("**2. Pivotal tuning** — a new word for the subject (started from its class word) trained together "
                "with a LoRA: the word carries the subject, the LoRA its details")
    with gr.Row():
        w["pt_identifier"] = gr.Textbox(label="Token", value="<tuki>", elem_id="pt-identifier",
                                        info="the new word, in angle brackets")
        w["pt_class"] = gr.Textbox(label="Class", value="broccoli", elem_id="pt-class",
                                   info="what it is; the token starts from this word")
        w["pt_rank"] = gr.Number(label="LoRA rank", value=d.rank, precision=0)
    with gr.Row():
        w["pt_token_lr"] = gr.Number(label="Token learning rate", value=d.token_lr, info="the LoRA's is below")
        w["pt_token_steps"] = gr.Number(label="Token-only steps", value=d.token_steps, precision=0,
                                        info="steps that train the token alone before the LoRA joins")
        w["pt_prior"] = gr.Checkbox(label="Prior preservation", value=d.prior_preservation,
                                    info="also trains on 50 class images the model draws")
    with gr.Row():
        w["pt_steps"] = gr.Number(label="Steps", value=d.steps, precision=0, elem_id="pt-steps")
        w["pt_lr"] = gr.Number(label="LoRA learning rate", value=d.lr)
        w["pt_batch"] = gr.Number(label="Batch size", value=d.batch_size, precision=0)
    with gr.Row():
        w["pt_text"] = gr.Checkbox(label="Text-encoder LoRA", value=d.train_text_encoder, elem_id="pt-text",
                                   info="also a LoRA on the text encoder, beside the token")
        w["pt_te_lr"] = gr.Number(label="Text-encoder learning rate", value=d.text_encoder_lr, elem_id="pt-te-lr",
                                  info=TE_LR_INFO)
    with gr.Row():
        w["pt_ema"] = gr.Number(label="EMA decay", value=0.0, elem_id="pt-ema",
                                info="keeps a moving average of the token and the LoRA and saves it; 0 is off")
        w["pt_caption_dropout"] = gr.Number(label="Caption dropout", value=d.caption_dropout,
                                            elem_id="pt-caption-dropout", info=DROPOUT_INFO)
    w["pt_more"] = gr.Textbox("", label="More subjects in the same run, one a line", lines=2, elem_id="pt-more",
                              placeholder="<bnh>=bnh-pictures,class=monster", info=MORE_INFO)
    w["pt_full"] = gr.Checkbox(label="Full fine-tune", value=False, elem_id="pt-full",
                               info="every UNet weight (and text-encoder weight, with the box above) beside the token "
                                    "instead of a LoRA; saves a whole model. Use a learning rate near 1e-4")
    w["pt_init"] = gr.Dropdown(["class", "random"], value="class", allow_custom_value=True, label="Token starts from",
                               elem_id="pt-init", info="class: the class word; random: a random draw, which helped a "
                                                       "subject the model had never drawn; or type a word")
    w["pt_start"] = gr.Button("Start pivotal tuning", variant="primary", elem_id="pt-start")


def _advanced_layout(gr, w: dict) -> None:
    """Settings every method shares: a GPU's precision and memory, pictures of any shape, captions, and keeping
    the checkpoint a metric likes best (the CLI's flags of the same names)."""
    a = Advanced()
    with gr.Accordion("Advanced: GPU, picture shapes, captions, checkpoint choice", open=False, elem_id="train-advanced"):
        with gr.Row():
            w["adv_precision"] = gr.Radio(["no", "fp16", "bf16"], value=a.mixed_precision, label="Mixed precision",
                                          elem_id="adv-precision", info="on a GPU: bf16 (or fp16) halves memory and "
                                                                        "time; weights stay float32")
            w["adv_checkpointing"] = gr.Checkbox(label="Gradient checkpointing", value=a.gradient_checkpointing,
                                                 info="less memory for more time (SDXL on 24 GB)")
            w["adv_accumulation"] = gr.Number(label="Gradient accumulation", value=a.gradient_accumulation,
                                              precision=0, info="batches per optimizer step")
            w["adv_optimizer"] = gr.Radio(["adamw", "adafactor", "adamw8bit"], value=a.optimizer, label="Optimizer",
                                          info="adafactor: a fraction of AdamW's memory (full SDXL fine-tunes); "
                                               "adamw8bit: a quarter of it (needs bitsandbytes)")
        with gr.Row():
            w["adv_schedule"] = gr.Dropdown(["constant", "constant_with_warmup", "linear", "cosine"],
                                            value=a.lr_schedule, label="Learning-rate schedule")
            w["adv_warmup"] = gr.Number(label="Warm-up steps", value=a.warmup_steps, precision=0)
            w["adv_report"] = gr.Radio(["none", "tensorboard"], value=a.report_to, label="Log to",
                                       info="tensorboard: runs/ID/logs")
        with gr.Row():
            w["adv_buckets"] = gr.Checkbox(label="Aspect-ratio buckets", value=a.buckets, elem_id="adv-buckets",
                                           info="pictures train whole at their shape, not centre-cropped square")
            w["adv_captions"] = gr.Textbox(label="Captions: the word the token replaces", value=a.captions,
                                           elem_id="adv-captions", placeholder="e.g. broccoli",
                                           info="train on each picture's caption (its .txt, or a drawn set's labels)")
        with gr.Row():
            w["adv_bias"] = gr.Dropdown(["none", "earlier", "later"], value=a.timestep_bias, label="Timestep bias",
                                        info="DreamBooth, pivotal: earlier favours fine detail, later the layout")
            w["adv_bias_x"] = gr.Number(label="Bias multiplier", value=a.timestep_bias_multiplier,
                                        info="how much more often those steps are drawn")
            w["adv_class_steps"] = gr.Number(label="Class-image steps", value=a.class_steps, precision=0,
                                             info="DreamBooth, pivotal: sampling steps per prior class image")
        with gr.Row():
            w["adv_select"] = gr.Textbox(label="Keep the best checkpoint by", value=a.select_by, elem_id="adv-select",
                                         placeholder="e.g. identity, or identity=1,emotion=0.5",
                                         info="scores a fixed validation set with the judge; empty: the last step")
            w["adv_every"] = gr.Number(label="Validate every", value=a.validate_every, precision=0, info="steps")


ADVANCED = ("adv_precision", "adv_checkpointing", "adv_accumulation", "adv_schedule", "adv_warmup", "adv_report",
            "adv_buckets", "adv_captions", "adv_bias", "adv_bias_x", "adv_select", "adv_every", "adv_optimizer",
            "adv_class_steps")


def advanced(precision, checkpointing, accumulation, schedule, warmup, report, buckets, captions, bias, bias_x,
             select, every, optimizer="adamw", class_steps=None) -> Advanced:
    """The Advanced accordion's widgets (in ADVANCED's order) as the jobs' shared settings."""
    return Advanced(mixed_precision=precision or "no", gradient_checkpointing=bool(checkpointing),
                    gradient_accumulation=whole("gradient accumulation", accumulation), lr_schedule=schedule or "constant",
                    warmup_steps=whole("warm-up steps", warmup), buckets=bool(buckets),
                    captions=(captions or "").strip(), timestep_bias=bias or "none",
                    timestep_bias_multiplier=float(bias_x if bias_x is not None else 2), select_by=(select or "").strip(),
                    validate_every=whole("validate every", every), report_to=report or "none",
                    optimizer=optimizer or "adamw",
                    class_steps=Advanced.class_steps if class_steps is None else whole("class steps", class_steps))


def _more(values) -> str:
    """The 'More subjects' box after the Advanced widgets (an API call may leave it out)."""
    return (values[len(ADVANCED)] or "") if len(values) > len(ADVANCED) else ""


def _after_more(values) -> float:
    """Pivotal tuning's EMA decay, the widget after 'More subjects' (an API call may leave it out: 0, off)."""
    return float(values[len(ADVANCED) + 1] or 0) if len(values) > len(ADVANCED) + 1 else 0.0


def _full(values) -> bool:
    """Pivotal tuning's full fine-tune box, after its EMA decay (an API call may leave it out: off)."""
    return bool(values[len(ADVANCED) + 2]) if len(values) > len(ADVANCED) + 2 else False


def _token_init(values) -> str:
    """Pivotal tuning's token start, after its full fine-tune box (an API call may leave it out: the class word)."""
    start = (str(values[len(ADVANCED) + 3] or "").strip() or "class") if len(values) > len(ADVANCED) + 3 else "class"
    return start.lower() if start.lower() in ("class", "random") else start


def _number(values, after_advanced: int) -> float:
    """A number widget `after_advanced` places after the Advanced widgets (an API call may leave it out: 0)."""
    at = len(ADVANCED) + after_advanced
    return float(values[at] or 0) if len(values) > at else 0.0


def _world_objects() -> list[str]:
    from conceptlab.world.attributes import OBJECTS

    return list(OBJECTS)


def wire(gr, studio: Studio, w: dict) -> None:
    ws, runner = studio.ws, studio.runner
    _wire_soup(gr, studio, w)
    ticking = {"fn": lambda status: keep_ticking(gr, studio, status), "inputs": [w["status"]], "outputs": [w["timer"]],
               "api_name": False, "queue": False, "show_progress": "hidden"}

    def images_list(selected):
        names = ws.image_folders()
        return gr.Dropdown(choices=names, value=selected if selected in names else (names[0] if names else None))

    @shown
    def upload(files, name):
        folder = actions.store_upload(ws, files, (name or "").strip())
        captioned = len(list(folder.glob("*.txt")))
        return images_list(folder.name), f"stored {len(list(folder.glob('*.png')))} pictures in uploads/{folder.name}" + \
            (f", {captioned} with captions" if captioned else "")

    @shown
    def draw(obj, n):
        from conceptlab.world.export import export_images

        name = ws.unique_name("uploads", f"world-{obj}")
        folder = ws.new_folder("uploads", name)
        export_images(folder, whole("pictures", n), seed=0, size=64, only={"object": {obj}, "emotion": {"happy"}})
        return images_list(name), f"drew {int(n)} happy {obj} stickers into uploads/{name}"

    upload_note = w["note"]
    w["upload"].click(upload, [w["files"], w["set_name"]], [w["images"], upload_note], api_name="upload_images")
    w["world"].click(draw, [w["world_object"], w["world_n"]], [w["images"], upload_note], api_name="draw_images")

    @shown
    def start(images, token, init, steps, lr, batch, every, seed, model, *adv):
        every = whole("checkpoint every", every)
        settings = TrainSettings(token=(token or "").strip(), images=images or "", init=(init or "").strip(),
                                 steps=whole("steps", steps), lr=float(lr), batch_size=whole("batch size", batch),
                                 seed=whole("seed", seed), model=(model or "").strip(), checkpoint_every=every,
                                 preview_every=every, advanced=advanced(*adv))
        job = runner.submit(settings)
        return _job_list(gr, studio, job.id)

    inputs = [w[k] for k in ("images", "token", "init", "steps", "lr", "batch", "every", "seed", "model", *ADVANCED)]
    w["start"].click(start, inputs, [w["job"]], api_name="train_start").then(**ticking)

    @shown
    def start_dreambooth(images, identifier, class_word, lora, rank, text_encoder, prior, class_images, prior_weight,
                         steps, lr, batch, every, seed, model, ema, *adv_more):
        every = whole("checkpoint every", every)
        settings = DreamBoothSettings(
            identifier=(identifier or "").strip(), class_word=(class_word or "").strip(), images=images or "",
            lora=bool(lora), rank=whole("LoRA rank", rank), train_text_encoder=bool(text_encoder),
            prior_preservation=bool(prior), class_images=whole("class images", class_images),
            prior_weight=float(prior_weight), steps=whole("steps", steps), lr=float(lr),
            batch_size=whole("batch size", batch), seed=whole("seed", seed), model=(model or "").strip(),
            checkpoint_every=every, preview_every=every, ema_decay=float(ema or 0),
            advanced=advanced(*adv_more[:len(ADVANCED)]), more_subjects=_more(adv_more),
            text_encoder_lr=_number(adv_more, 1), caption_dropout=_number(adv_more, 2))
        return _job_list(gr, studio, runner.submit(settings).id)

    db_inputs = [w[k] for k in ("images", "db_identifier", "db_class", "db_lora", "db_rank", "db_text", "db_prior",
                                "db_class_images", "db_prior_weight", "db_steps", "db_lr", "db_batch", "every", "seed",
                                "model", "db_ema", *ADVANCED, "db_more", "db_te_lr", "db_caption_dropout")]
    w["db_start"].click(start_dreambooth, db_inputs, [w["job"]], api_name="train_dreambooth").then(**ticking)

    @shown
    def start_pivotal(images, identifier, class_word, rank, token_lr, token_steps, prior, steps, lr, batch, every, seed,
                      model, text_encoder, *adv_more):
        every = whole("checkpoint every", every)
        settings = PivotalSettings(
            identifier=(identifier or "").strip(), class_word=(class_word or "").strip(), images=images or "",
            rank=whole("LoRA rank", rank), token_lr=float(token_lr), token_steps=whole("token-only steps", token_steps),
            prior_preservation=bool(prior), steps=whole("steps", steps), lr=float(lr), batch_size=whole("batch size", batch),
            seed=whole("seed", seed), model=(model or "").strip(), checkpoint_every=every, preview_every=every,
            train_text_encoder=bool(text_encoder), advanced=advanced(*adv_more[:len(ADVANCED)]),
            more_subjects=_more(adv_more), ema_decay=_after_more(adv_more), full_fine_tune=_full(adv_more),
            token_init=_token_init(adv_more), text_encoder_lr=_number(adv_more, 4),
            caption_dropout=_number(adv_more, 5))
        return _job_list(gr, studio, runner.submit(settings).id)

    pt_inputs = [w[k] for k in ("images", "pt_identifier", "pt_class", "pt_rank", "pt_token_lr", "pt_token_steps",
                                "pt_prior", "pt_steps", "pt_lr", "pt_batch", "every", "seed", "model", "pt_text",
                                *ADVANCED, "pt_more", "pt_ema", "pt_full", "pt_init", "pt_te_lr",
                                "pt_caption_dropout")]
    w["pt_start"].click(start_pivotal, pt_inputs, [w["job"]], api_name="train_pivotal").then(**ticking)
    w["cancel"].click(shown(lambda job: _job_list(gr, studio, runner.cancel(_need(job)).id)), [w["job"]], [w["job"]],
                      api_name="train_cancel").then(**ticking)
    w["resume"].click(shown(lambda job: _job_list(gr, studio, runner.resume(_need(job)).id)), [w["job"]], [w["job"]],
                      api_name="train_resume").then(**ticking)
    outputs = [w["status"], w["plot"], w["preview"], w["log"], w["jobs"]]
    refresh = shown(lambda job: job_view(studio, job))
    w["timer"].tick(refresh, [w["job"]], outputs, api_name="job_status", concurrency_limit=None,
                    show_progress="hidden").then(**ticking)
    w["job"].change(refresh, [w["job"]], outputs, api_name=False, concurrency_limit=None,
                    show_progress="hidden").then(**ticking)
    w["ticking"] = ticking  # the page's load event starts the timer when a job already runs


def _wire_soup(gr, studio: Studio, w: dict) -> None:
    def choices():
        return gr.Dropdown(choices=actions.soup_choices(studio.ws))

    @shown
    def make(runs, weights, name):
        out = actions.soup(studio.ws, list(runs or []), weights or "", (name or "").strip())
        where = studio.ws.relative(out)
        if (out / "lora").is_dir():
            return (f"Souped {len(runs)} runs into {where}/lora: it is in the Concepts tab; pick it under LoRAs in "
                    "Generate.")
        return f"Souped {len(runs)} runs into {where}/pipeline: type that path as the Model in Generate."

    w["soup_box"].expand(choices, None, [w["soup_runs"]], api_name="soup_choices")
    w["soup"].click(make, [w["soup_runs"], w["soup_weights"], w["soup_name"]], [w["soup_note"]], api_name="soup")


def keep_ticking(gr, studio: Studio, status: str | None):
    """The timer's next state: on while a job is queued or running, or while the status shown still says so
    (one more tick shows how it ended)."""
    busy = any(j.status in ("queued", "running") for j in studio.runner.jobs())
    shown_busy = any(f": {state}" in (status or "") for state in ("queued", "running"))
    return gr.Timer(active=busy or shown_busy)


def _need(job: str | None) -> str:
    if not job:
        raise InputError("job", None, "none selected", "Start a job or pick one from the list")
    return job


def _job_list(gr, studio: Studio, selected: str | None):
    ids = [j.id for j in reversed(studio.runner.jobs())]
    return gr.Dropdown(choices=ids, value=selected if selected in ids else (ids[0] if ids else None))


def job_view(studio: Studio, job_id: str | None):
    """(status markdown, loss rows, preview path, log tail, jobs table) of a job: what the Train tab shows."""
    import pandas as pd

    jobs = studio.runner.jobs()
    table = pd.DataFrame([{"job": j.id, "kind": j.kind, "status": j.status, "concept": _learns(j),
                           "steps": j.settings.get("steps", "")} for j in reversed(jobs)])
    if not job_id or job_id not in {j.id for j in jobs}:
        return "No job selected.", pd.DataFrame({"step": [], "loss": []}), None, "", table
    job = studio.runner.store.load(job_id)
    progress = read_progress(studio.ws.root / job.run_dir, studio.runner.store.log_path(job.id))
    place = studio.runner.queue_position(job.id)
    status = f"**{job.id}**: {job.status}" + (f" (number {place} in the queue)" if place else "")
    if job.status in ("running", "cancelled", "interrupted", "failed", "done"):
        status += f" — {progress.line()}"
    if job.message:  # tokens look like HTML tags (<my-cat>): shown as text, not swallowed by the markdown
        status += f"\n\n{html.escape(job.message)}"
    if job.status == "done":
        status += "\n\n" + _where_it_went(job)
    log = _tail(studio.runner.store.log_path(job.id))
    return status, pd.DataFrame(loss_rows(progress) or {"step": [], "loss": []}), \
        (str(progress.preview) if progress.preview else None), log, table


def _learns(job) -> str:
    """What a job teaches: its token, or its subject ('tuki broccoli') and how."""
    s = job.settings
    if job.kind == "pivotal":
        how = "full fine-tune" if s.get("full_fine_tune") else f"LoRA rank {s.get('rank')}"
        return f"{s.get('identifier', '')} {s.get('class_word', '')} (token + {how})"
    if job.kind == "dreambooth":
        how = f"LoRA rank {s.get('rank')}" if s.get("lora") else "full fine-tune"
        return f"{s.get('identifier', '')} {s.get('class_word', '')} ({how})"
    return s.get("token", "")


def _where_it_went(job) -> str:
    s = job.settings
    subject = html.escape(f"{s.get('identifier', '')} {s.get('class_word', '')}")
    if job.kind == "pivotal" and s.get("full_fine_tune"):
        return (f"The fine-tuned model, which knows the token, is {job.run_dir}/pipeline: type that path as the Model "
                f"in Generate and prompt with 'a {subject}'.")
    if job.kind == "pivotal":
        return (f"The token and its LoRA are in the Concepts tab ({job.run_dir}/...); pick both in Generate "
                f"(Concepts and LoRAs) and prompt with 'a {subject}'.")
    if job.kind != "dreambooth":
        return "The learned token is in the Concepts tab and can be used in Generate."
    if s.get("lora"):
        return (f"The LoRA is in the Concepts tab (runs/{job.id}/lora); pick it under LoRAs in Generate and "
                f"prompt with 'a {subject}'.")
    return f"The fine-tuned model is {job.run_dir}/pipeline: type that path as the Model in Generate."


def _tail(path: Path) -> str:
    from conceptlab.studio.jobs import log_tail

    return log_tail(path, LOG_LINES)
