"""The studio's page: five tabs of widgets wired to `actions`, `jobs` and `library` (no logic of its own).

Every handler is wrapped by `_shown`: a ConceptlabError becomes a gr.Error with the CLI's one-line message,
anything else a one-line internal error, as `conceptlab` prints them. Work that uses the model runs one at a
time through Gradio's queue; the status refresh of the Train tab (a gr.Timer) runs beside it.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import os
from pathlib import Path

from conceptlab.errors import ConceptlabError, InputError
from conceptlab.studio import actions, library
from conceptlab.studio.jobs import JobRunner, TrainSettings
from conceptlab.studio.progress import loss_rows, read_progress
from conceptlab.studio.workspace import Workspace

REFRESH_SECONDS = 1.0
LOG_LINES = 30


class Studio:
    """What the page works on: a workspace, its job runner, and the loaded pipeline."""

    def __init__(self, workspace: str | Path, device: str | None = None, dtype: str | None = None,
                 python: str | None = None, job_env: dict | None = None, model: str | None = None):
        self.ws = Workspace(workspace)
        self.model = model or ""  # the model the forms start with; "" = the shipped base model
        self.runner = JobRunner(self.ws, env=job_env, **({"python": python} if python else {}))
        self.cache = actions.PipelineCache(device, dtype)
        self.inversions = actions.InversionCache()

    def close(self, stop_jobs: bool = True) -> None:
        self.runner.stop(stop_jobs=stop_jobs)


def check_host(host: str, auth: tuple[str, str] | None) -> None:
    """Only the loopback interface may be served without a password: anyone on the network could train and
    write files otherwise."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and auth is None:
        raise InputError("--host", host, "serves the studio beyond this machine without a password",
                         "Add --auth USER:PASS, or keep the default --host 127.0.0.1")


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise InputError("--auth", "***", "expected USER:PASS", "e.g. --auth me:a-long-password")
    return user, password


def _shown(fn):
    """Runs a handler; errors become one-line gr.Errors (the CLI's messages)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import gradio as gr

        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ConceptlabError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - one line for the page, as the CLI prints it
            if os.environ.get("CONCEPTLAB_DEBUG"):
                raise
            raise gr.Error(f"internal error: {type(e).__name__}: {e}. This is a bug in conceptlab; run the studio "
                           "with CONCEPTLAB_DEBUG=1 for the traceback and report it") from None

    return wrapper


def _int(argument: str, value) -> int:
    from conceptlab.validation import Bound

    return Bound(integer=True).check(argument, value if value is not None else "")


def _size(value) -> int | None:
    return None if value in (None, 0, "") else _int("size", value)


def build_app(studio: Studio):
    """The gr.Blocks of the studio; launch it with `launch`."""
    os.environ["GRADIO_TEMP_DIR"] = str(studio.ws.root / ".cache")  # what the page shows is copied here
    import gradio as gr

    from conceptlab.generation.schedulers import SCHEDULERS

    ws = studio.ws
    with gr.Blocks(title="conceptlab studio", analytics_enabled=False) as app:
        gr.Markdown(f"## conceptlab studio\nWorkspace: `{ws.root}`")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                g = _generate_tab(gr, SCHEDULERS, studio.model)
            with gr.Tab("Train", id="train"):
                t = _train_tab(gr, studio.model)
            with gr.Tab("Concepts", id="concepts"):
                c = _concepts_tab(gr)
            with gr.Tab("Edit", id="edit"):
                e = _edit_tab(gr, studio.model)
            with gr.Tab("Evaluate", id="evaluate"):
                v = _evaluate_tab(gr)
        _wire_generate(gr, studio, g, e, tabs)
        _wire_train(gr, studio, t)
        _wire_concepts(gr, studio, c)
        _wire_edit(gr, studio, e)
        _wire_evaluate(gr, studio, v)
        app.load(_shown(lambda: _choices(gr, studio)), None,
                 [g["concepts"], g["loras"], e["concepts"], c["pick"], c["first"], c["second"], t["images"],
                  v["folder"]], api_name="lists")
    return app


def _choices(gr, studio: Studio):
    """Fresh lists of the workspace's concepts, LoRAs, image sets, for every dropdown that offers them."""
    concepts = library.list_concepts(studio.ws)
    tokens = [c.name for c in concepts if c.kind == "embedding"]
    loras = [c.name for c in concepts if c.kind == "lora"]
    every = [c.name for c in concepts]
    images = studio.ws.image_folders()
    return (gr.Dropdown(choices=tokens), gr.Dropdown(choices=loras), gr.Dropdown(choices=tokens),
            gr.Dropdown(choices=every), gr.Dropdown(choices=tokens), gr.Dropdown(choices=tokens),
            gr.Dropdown(choices=images, value=images[0] if images else None),
            _first(gr, studio.ws.image_sets()))


def _first(gr, choices: list[str]):
    return gr.Dropdown(choices=choices, value=choices[0] if choices else None)


# ----------------------------------------------------------------------------------------------- Generate


def _generate_tab(gr, schedulers, model: str) -> dict:
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


def _wire_generate(gr, studio: Studio, w: dict, e: dict, tabs) -> None:
    from conceptlab.generation.generate import GenerationConfig

    @_shown
    def run(prompt, negative, seed, n, steps, guidance, scheduler, width, height, model, concepts, loras, scale,
            progress=gr.Progress()):  # noqa: B008 - how gradio hands a handler its progress tracker
        progress(0, desc="loading the model")
        cfg = GenerationConfig(prompt=prompt, negative_prompt=negative or "", n=_int("images", n),
                               seed=_int("seed", seed), steps=_int("steps", steps), guidance=float(guidance),
                               scheduler=None if scheduler in (None, "default") else scheduler,
                               width=_size(width), height=_size(height))
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

    @_shown
    def send(row):
        if not row:
            raise InputError("image", None, "none selected", "Click an image in the gallery first")
        return row["path"], row["prompt"], gr.Tabs(selected="edit")

    w["to_edit"].click(send, [w["picked"]], [e["photo"], e["source"], tabs], api_name=False)


# -------------------------------------------------------------------------------------------------- Train


def _train_tab(gr, model: str) -> dict:
    d, w = TrainSettings.defaults(), {}
    with gr.Row():
        with gr.Column():
            gr.Markdown("**1. Images** — drop 3-12 pictures of the concept, or draw a set from the sticker world")
            w["files"] = gr.File(file_count="multiple", file_types=["image"], type="filepath", label="Pictures",
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
            with gr.Row():
                w["every"] = gr.Number(label="Checkpoint and preview every", value=d.checkpoint_every, precision=0,
                                       elem_id="train-every", info="steps; resume continues from the last checkpoint")
                w["seed"] = gr.Number(label="Seed", value=d.seed, precision=0)
            w["model"] = gr.Textbox(label="Model", value=model, placeholder="shipped sticker base model")
            with gr.Row():
                w["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
                w["cancel"] = gr.Button("Cancel", elem_id="train-cancel")
                w["resume"] = gr.Button("Resume", elem_id="train-resume")
    w["job"] = gr.Dropdown([], allow_custom_value=True, label="Job", elem_id="train-job")
    w["status"] = gr.Markdown("No job yet.", elem_id="train-status")
    with gr.Row():
        w["plot"] = gr.LinePlot(x="step", y="loss", title="Loss", height=240)
        w["preview"] = gr.Image(label="Latest preview", type="filepath", height=240, elem_id="train-preview")
    w["log"] = gr.Textbox(label="Log", lines=8, max_lines=12, autoscroll=True)
    w["jobs"] = gr.Dataframe(label="Jobs", interactive=False)
    w["timer"] = gr.Timer(REFRESH_SECONDS)
    return w


def _world_objects() -> list[str]:
    from conceptlab.world.attributes import OBJECTS

    return list(OBJECTS)


def _wire_train(gr, studio: Studio, w: dict) -> None:
    ws, runner = studio.ws, studio.runner

    def images_list(selected):
        names = ws.image_folders()
        return gr.Dropdown(choices=names, value=selected if selected in names else (names[0] if names else None))

    @_shown
    def upload(files, name):
        folder = actions.store_upload(ws, files, (name or "").strip())
        return images_list(folder.name), f"stored {len(list(folder.glob('*.png')))} pictures in uploads/{folder.name}"

    @_shown
    def draw(obj, n):
        from conceptlab.world.export import export_images

        name = ws.unique_name("uploads", f"world-{obj}")
        folder = ws.new_folder("uploads", name)
        export_images(folder, _int("pictures", n), seed=0, size=64, only={"object": {obj}, "emotion": {"happy"}})
        return images_list(name), f"drew {int(n)} happy {obj} stickers into uploads/{name}"

    upload_note = w["note"]
    w["upload"].click(upload, [w["files"], w["set_name"]], [w["images"], upload_note], api_name="upload_images")
    w["world"].click(draw, [w["world_object"], w["world_n"]], [w["images"], upload_note], api_name="draw_images")

    @_shown
    def start(images, token, init, steps, lr, batch, every, seed, model):
        every = _int("checkpoint every", every)
        settings = TrainSettings(token=(token or "").strip(), images=images or "", init=(init or "").strip(),
                                 steps=_int("steps", steps), lr=float(lr), batch_size=_int("batch size", batch),
                                 seed=_int("seed", seed), model=(model or "").strip(), checkpoint_every=every,
                                 preview_every=every)
        job = runner.submit(settings)
        return _job_list(gr, studio, job.id)

    inputs = [w[k] for k in ("images", "token", "init", "steps", "lr", "batch", "every", "seed", "model")]
    w["start"].click(start, inputs, [w["job"]], api_name="train_start")
    w["cancel"].click(_shown(lambda job: _job_list(gr, studio, runner.cancel(_need(job)).id)), [w["job"]], [w["job"]],
                      api_name="train_cancel")
    w["resume"].click(_shown(lambda job: _job_list(gr, studio, runner.resume(_need(job)).id)), [w["job"]], [w["job"]],
                      api_name="train_resume")
    outputs = [w["status"], w["plot"], w["preview"], w["log"], w["jobs"]]
    refresh = _shown(lambda job: job_view(studio, job))
    w["timer"].tick(refresh, [w["job"]], outputs, api_name="job_status", concurrency_limit=None,
                    show_progress="hidden")
    w["job"].change(refresh, [w["job"]], outputs, api_name=False, concurrency_limit=None, show_progress="hidden")


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
    table = pd.DataFrame([{"job": j.id, "status": j.status, "token": j.settings.get("token", ""),
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
        status += "\n\nThe learned token is in the Concepts tab and can be used in Generate."
    log = _tail(studio.runner.store.log_path(job.id))
    return status, pd.DataFrame(loss_rows(progress) or {"step": [], "loss": []}), \
        (str(progress.preview) if progress.preview else None), log, table


def _tail(path: Path) -> str:
    from conceptlab.studio.jobs import log_tail

    return log_tail(path, LOG_LINES)


# ----------------------------------------------------------------------------------------------- Concepts


def _concepts_tab(gr) -> dict:
    w = {}
    w["refresh"] = gr.Button("Refresh the library", elem_id="concepts-refresh")
    w["table"] = gr.Dataframe(label="Learned tokens and LoRAs", interactive=False, elem_id="concepts-table")
    with gr.Row():
        with gr.Column():
            w["pick"] = gr.Dropdown([], allow_custom_value=True, label="Concept")
            w["meta"] = gr.JSON(label="Metadata")
            w["files"] = gr.File(label="Files", file_count="multiple", interactive=False)
            with gr.Row():
                w["format"] = gr.Dropdown(["diffusers", "a1111-pt", "a1111-safetensors", "kohya", "numpy"],
                                          value="a1111-safetensors", label="Convert to")
                w["rename"] = gr.Textbox(label="New token (optional)")
            with gr.Row():
                w["convert"] = gr.Button("Convert")
                w["delete"] = gr.Button("Delete", variant="stop")
        w["preview"] = gr.Image(label="Preview", type="filepath")
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


def _wire_concepts(gr, studio: Studio, w: dict) -> None:
    import pandas as pd

    ws = studio.ws

    def table():
        rows = [c.summary() for c in library.list_concepts(ws)]
        names = [r["name"] for r in rows]
        tokens = [r["name"] for r in rows if r["kind"] == "embedding"]
        return (pd.DataFrame(rows or {"name": []}), gr.Dropdown(choices=names), gr.Dropdown(choices=tokens),
                gr.Dropdown(choices=tokens))

    listing = [w["table"], w["pick"], w["first"], w["second"]]
    w["refresh"].click(_shown(table), None, listing, api_name="concepts")

    @_shown
    def show(name):
        if not name:
            return None, None, None
        c = library.find(ws, name)
        files = sorted(str(p) for p in c.folder.iterdir() if p.is_file())
        return {**c.meta, "token": c.token, "kind": c.kind}, files, str(c.preview) if c.preview else None

    w["pick"].change(show, [w["pick"]], [w["meta"], w["files"], w["preview"]], api_name="concept")

    @_shown
    def convert(name, fmt, token):
        path = library.convert(ws, _need_concept(name), fmt, (token or "").strip())
        return [str(path)], f"wrote {ws.relative(path)}"

    w["convert"].click(convert, [w["pick"], w["format"], w["rename"]], [w["files"], w["note"]], api_name="convert")

    @_shown
    def delete(name):
        library.delete(ws, _need_concept(name))
        return (*table(), f"deleted {name}")

    w["delete"].click(delete, [w["pick"]], [*listing, w["note"]], api_name="delete")

    @_shown
    def mix(first, second, weight, method, token):
        concept = actions.mix(ws, studio.cache, _need_concept(first), _need_concept(second), float(weight),
                              (token or "").strip(), method)
        return (*table(), str(concept.folder / "sweep.png"), f"mixed into {concept.token} ({concept.name})")

    w["mix"].click(mix, [w["first"], w["second"], w["weight"], w["method"], w["name"]],
                   [*listing, w["strip"], w["note"]], api_name="mix")

    @_shown
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


# --------------------------------------------------------------------------------------------------- Edit


def _edit_tab(gr, model: str) -> dict:
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


def _wire_edit(gr, studio: Studio, w: dict) -> None:
    from conceptlab.validation import WEIGHT

    @_shown
    def run(source, target, photo, method, concepts, model, mode, cross, self_steps, word, scale, blend, blend_mask,
            seed, steps, guidance, progress=gr.Progress()):  # noqa: B008 - gradio's progress tracker
        progress(0, desc="inverting the photo" if photo else "editing")
        word = (word or "").strip()
        reweight = {word: WEIGHT.check("weight", scale)} if word else {}
        outcome = actions.edit(
            studio.ws, studio.cache, studio.inversions, source, target, model=(model or "").strip() or None,
            concepts=concepts, photo=photo, method=method, reweight=reweight, mode=mode, cross_steps=float(cross),
            self_steps=float(self_steps), blend=[b.strip() for b in (blend or "").split(",") if b.strip()],
            blend_mask=blend_mask, seed=_int("seed", seed), steps=_int("steps", steps), guidance=float(guidance))
        info = f"mode: **{outcome.mode}**"
        if outcome.psnr is not None:
            info += f" · {method} inversion: reconstruction PSNR **{outcome.psnr:.2f} dB**"
        files = [str(outcome.folder / "source.png"), str(outcome.folder / "edit.png")]
        return list(zip(files, outcome.labels)), str(outcome.mask) if outcome.mask else None, info

    inputs = [w[k] for k in ("source", "target", "photo", "method", "concepts", "model", "mode", "cross", "self",
                             "word", "scale", "blend", "blend_mask", "seed", "steps", "guidance")]
    w["go"].click(run, inputs, [w["gallery"], w["mask"], w["info"]], api_name="edit")


# ----------------------------------------------------------------------------------------------- Evaluate


def _evaluate_tab(gr) -> dict:
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


def _wire_evaluate(gr, studio: Studio, w: dict) -> None:
    import pandas as pd

    @_shown
    def score(folder):
        if not folder:
            raise InputError("folder", None, "none selected", "Generate or upload images, then pick their folder")
        per_attribute, per_image = actions.score_folder(studio.ws, folder)
        return pd.DataFrame(per_attribute), pd.DataFrame(per_image)

    w["go"].click(score, [w["folder"]], [w["attributes"], w["images"]], api_name="evaluate")
    w["refresh"].click(lambda: _first(gr, studio.ws.image_sets()), None, [w["folder"]], api_name=False)


# ------------------------------------------------------------------------------------------------- launch


def launch(studio: Studio, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           block: bool = True, quiet: bool = False):
    """Serves the studio; returns the running gr.Blocks when `block` is False (tests, benchmarks)."""
    check_host(host, auth)
    import gradio as gr

    app = build_app(studio)
    app.queue(default_concurrency_limit=1)  # one model call at a time: they share the pipeline and the CPU
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: nothing from outside
    studio.runner.start()
    app.launch(server_name=host, server_port=port, auth=auth, allowed_paths=[str(studio.ws.root)],
               prevent_thread_lock=True, quiet=quiet, show_error=True, ssr_mode=False, theme=theme,
               footer_links=[])
    if not block:
        return app
    try:
        app.block_thread()
    finally:
        studio.close()
    return app

