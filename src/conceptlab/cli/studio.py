"""`conceptlab studio`: the whole workflow in a local web app (generate, train, concepts, edit, evaluate)."""

from __future__ import annotations

from conceptlab.cli.common import add_command, flag
from conceptlab.validation import Bound

PORT = Bound(1, 65535, integer=True, hint="7860 is Gradio's usual port")


def add_parser(sub):
    p = add_command(sub, "studio", help="open the studio: a local web app for the whole workflow", run=run)
    flag(p, "--workspace", default="studio-workspace",
         help="folder of everything the studio makes: uploads, runs, concepts, generations, jobs (created if missing)")
    flag(p, "--host", default="127.0.0.1",
         help="interface to serve on; anything but loopback (127.0.0.1, localhost, ::1) needs --auth")
    flag(p, "--port", type=PORT.arg, default=7860, help="port to serve on")
    flag(p, "--auth", default=None, metavar="USER:PASS", help="ask for this user name and password")
    flag(p, "--model", default=None,
         help="the model the forms start with: hub id, diffusers folder or .safetensors file (default: the shipped "
              "sticker base model)")
    flag(p, "--device", default=None, help="torch device for generation, edits and training jobs, e.g. cuda (default: cpu)")
    flag(p, "--dtype", default=None, choices=("float32", "float16", "bfloat16"),
         help="weights' dtype for generation, edits and training jobs (a job's trained weights stay float32; its "
              "frozen ones are stored so), e.g. float16 on a GPU (default: as saved)")
    return p


def run(args) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the studio is local
    from conceptlab.errors import InputError
    from conceptlab.studio.app import Studio, check_host, launch, parse_auth

    auth = parse_auth(args.auth)
    check_host(args.host, auth)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InputError("studio", "gradio", "is not installed", "pip install 'conceptlab[studio]'") from None
    studio = Studio(args.workspace, device=args.device, dtype=args.dtype, model=args.model)
    studio.ws.claim()
    print(f"conceptlab studio: workspace {studio.ws.root}; open http://{_url_host(args.host)}:{args.port} "
          "(Ctrl-C stops it; a running training job is stopped with a checkpoint and can be resumed)")
    launch(studio, host=args.host, port=args.port, auth=auth, quiet=True)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
