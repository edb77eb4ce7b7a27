"""The studio's page: five tabs of widgets wired to `actions`, `jobs` and `library` (no logic of its own).

The tabs live in `studio.tabs`, one module each; every handler is wrapped by `ui.shown`, so a ConceptlabError
reaches the page as a gr.Error with the CLI's one-line message. Work that uses the model runs one at a
time through Gradio's queue; the status refresh of the Train tab (a gr.Timer) runs beside it.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from conceptlab.errors import InputError
from conceptlab.studio import actions, library
from conceptlab.studio.jobs import JobRunner
from conceptlab.studio.tabs import concepts, edit, evaluate, generate, train
from conceptlab.studio.ui import first_choice, shown
from conceptlab.studio.workspace import Workspace


class Studio:
    """What the page works on: a workspace, its job runner, and the loaded pipeline."""

    def __init__(self, workspace: str | Path, device: str | None = None, dtype: str | None = None,
                 python: str | None = None, job_env: dict | None = None, model: str | None = None):
        self.ws = Workspace(workspace)
        self.model = model or ""  # the model the forms start with; "" = the shipped base model
        self.cache = actions.PipelineCache(device, dtype)
        # a job on the studio's GPU gets its memory: the page's pipeline is dropped (reloaded on the next use)
        on_start = (lambda job: self.cache.release()) if device and device.startswith("cuda") else None
        self.runner = JobRunner(self.ws, env=job_env, device=device, dtype=dtype, on_start=on_start,
                                **({"python": python} if python else {}))
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
                g = generate.layout(gr, SCHEDULERS, studio.model)
            with gr.Tab("Train", id="train"):
                t = train.layout(gr, studio.model)
            with gr.Tab("Concepts", id="concepts"):
                c = concepts.layout(gr)
            with gr.Tab("Edit", id="edit"):
                e = edit.layout(gr, studio.model)
            with gr.Tab("Evaluate", id="evaluate"):
                v = evaluate.layout(gr)
        generate.wire(gr, studio, g, e, tabs)
        train.wire(gr, studio, t)
        concepts.wire(gr, studio, c)
        edit.wire(gr, studio, e)
        evaluate.wire(gr, studio, v)
        # outside the queue: the page's lists must not wait behind a generation that holds the model
        app.load(shown(lambda: _choices(gr, studio)), None,
                 [g["concepts"], g["loras"], e["concepts"], e["loras"], c["pick"], c["first"], c["second"],
                  t["images"], v["folder"], v["references"]], api_name="lists", queue=False)
        app.load(**t["ticking"])  # the Train tab's refresh timer runs while a job is queued or running
    return app


def _choices(gr, studio: Studio):
    """Fresh lists of the workspace's concepts, LoRAs, image sets, for every dropdown that offers them."""
    concepts = library.list_concepts(studio.ws)
    tokens = [c.name for c in concepts if c.kind == "embedding"]
    loras = [c.name for c in concepts if c.kind == "lora"]
    every = [c.name for c in concepts]
    images = studio.ws.image_folders()
    return (gr.Dropdown(choices=tokens), gr.Dropdown(choices=loras), gr.Dropdown(choices=tokens),
            gr.Dropdown(choices=loras), gr.Dropdown(choices=every), gr.Dropdown(choices=tokens), gr.Dropdown(choices=tokens),
            gr.Dropdown(choices=images, value=images[0] if images else None),
            first_choice(gr, studio.ws.image_sets()), gr.Dropdown(choices=studio.ws.image_sets()))



# ------------------------------------------------------------------------------------------------- launch


def launch(studio: Studio, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           block: bool = True, quiet: bool = False):
    """Serves the studio; returns the running gr.Blocks when `block` is False (tests, benchmarks)."""
    check_host(host, auth)
    import gradio as gr
    from starlette.middleware import Middleware

    from conceptlab.studio.assets import AssetCache

    app = build_app(studio)
    app.queue(default_concurrency_limit=1)  # one model call at a time: they share the pipeline and the CPU
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: nothing from outside
    studio.runner.start()
    app.launch(server_name=host, server_port=port, auth=auth, allowed_paths=[str(studio.ws.root)],
               prevent_thread_lock=True, quiet=quiet, show_error=True, ssr_mode=False, theme=theme,
               footer_links=[], app_kwargs={"middleware": [Middleware(AssetCache)]})
    if not block:
        return app
    try:
        app.block_thread()
    finally:
        studio.close()
    return app

