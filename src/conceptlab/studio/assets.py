"""Gradio's page code served from memory: the first load of the studio fetches ~100 small script and style
files, and on a busy machine the web server, not the browser, was what the page waited for (each file went
through Gradio's route, a thread for the disk and a gzip pass: ~10 ms of the server's one event loop each,
~50 ms waited per file with six requests in flight; see benchmarks/bench_studio.py).

`AssetCache` is an ASGI middleware, given to Gradio through `launch(app_kwargs={"middleware": ...})`: a GET
of `/assets/<name>` for a file of Gradio's own built frontend is answered from memory, compressed once if the
browser takes gzip; anything else (a name that is not one of those files, every other path) goes on to Gradio
unchanged. The files' names carry a hash of their content, so the answer may be cached by the browser for good.
"""

from __future__ import annotations

import gzip
import mimetypes
import threading
from pathlib import Path

PREFIX = "/assets/"
MIN_GZIP = 400  # bytes; smaller answers are sent as they are (as Gradio's own middleware does)


def gradio_assets() -> Path:
    """The folder of Gradio's built frontend files (what its `/assets/` route serves)."""
    import gradio

    return Path(gradio.__file__).parent / "templates" / "frontend" / "assets"


class AssetCache:
    """ASGI middleware: `/assets/<name>` from `folder` answered from memory (raw and gzip), the rest passed on."""

    def __init__(self, app, folder: str | Path | None = None):
        self.app = app
        self.folder = Path(folder) if folder else gradio_assets()
        files = [p for p in self.folder.iterdir() if p.is_file()] if self.folder.is_dir() else []
        self.sizes = {p.name: p.stat().st_size for p in files}  # the names it answers for, and their sizes
        self.cache: dict[tuple[str, bool], tuple[bytes, bytes]] = {}  # (name, gzip?) -> (body, content type)
        self.lock = threading.Lock()

    def answer(self, name: str, zipped: bool) -> tuple[bytes, bytes]:
        key = (name, zipped)
        if key not in self.cache:
            body = (self.folder / name).read_bytes()
            if zipped:
                body = gzip.compress(body, compresslevel=6, mtime=0)
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            with self.lock:
                self.cache[key] = (body, kind.encode())
        return self.cache[key]

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        name = path[len(PREFIX):] if path.startswith(PREFIX) and scope.get("method") in ("GET", "HEAD") else ""
        if name not in self.sizes:  # also refuses "", sub-folders and any "../": only listed file names match
            return await self.app(scope, receive, send)
        accepts = b"".join(v for k, v in scope.get("headers", []) if k == b"accept-encoding")
        zipped = b"gzip" in accepts and self.sizes[name] >= MIN_GZIP
        body, kind = self.answer(name, zipped)
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"public, max-age=31536000, immutable"), (b"vary", b"Accept-Encoding")]
        if zipped:
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
