"""The studio's in-memory answer for Gradio's frontend files: the same bytes as the files on disk (raw, or gzip
that unpacks to them), and everything it does not own passed on to the app untouched."""

import asyncio
import gzip

import pytest

from conceptlab.studio.assets import AssetCache, gradio_assets


def _app_saying(word: bytes):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 299, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": word + scope["path"].encode()})

    return app


def _get(app, path: str, method: str = "GET", encoding: bytes | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request through the ASGI `app`."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    headers = [(b"accept-encoding", encoding)] if encoding else []
    asyncio.run(app({"type": "http", "method": method, "path": path, "headers": headers}, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "Index-abc.js").write_text("export const x = 1;\n" * 100)
    (tmp_path / "assets" / "tiny.css").write_text("a{}")
    (tmp_path / "secret.txt").write_text("not an asset")
    return tmp_path / "assets"


def test_an_asset_is_its_file_raw_or_gzipped(folder):
    app = AssetCache(_app_saying(b"app:"), folder)
    raw = (folder / "Index-abc.js").read_bytes()
    status, headers, body = _get(app, "/assets/Index-abc.js")
    assert status == 200 and body == raw and "javascript" in headers["content-type"]  # text/ or application/
    assert "immutable" in headers["cache-control"] and "content-encoding" not in headers
    status, headers, body = _get(app, "/assets/Index-abc.js", encoding=b"gzip, deflate, br")
    assert headers["content-encoding"] == "gzip" and len(body) < len(raw) and gzip.decompress(body) == raw
    assert int(headers["content-length"]) == len(body)
    _, headers, body = _get(app, "/assets/tiny.css", encoding=b"gzip")  # too small to be worth packing
    assert body == b"a{}" and "content-encoding" not in headers
    assert _get(app, "/assets/Index-abc.js", method="HEAD")[2] == b""


@pytest.mark.parametrize("path", ["/assets/missing.js", "/assets/../secret.txt", "/assets/", "/assets",
                                  "/gradio_api/file=x", "/assets/sub/Index-abc.js", "/other/Index-abc.js"])
def test_what_it_does_not_own_goes_to_the_app(folder, path):
    status, _, body = _get(AssetCache(_app_saying(b"app:"), folder), path)
    assert status == 299 and body == b"app:" + path.encode()


def test_a_post_goes_to_the_app(folder):
    assert _get(AssetCache(_app_saying(b"app:"), folder), "/assets/Index-abc.js", method="POST")[0] == 299


def test_the_launched_studio_serves_gradios_own_files(tmp_path):
    """Through the real server: a file Gradio's page loads comes back byte-identical to Gradio's copy."""
    pytest.importorskip("gradio")
    import urllib.request

    from conceptlab.studio.app import Studio, launch
    from tests.ports import free_port

    name = next(p.name for p in sorted(gradio_assets().glob("*.js")) if p.stat().st_size > 10_000)
    studio, port = Studio(tmp_path / "ws"), free_port()
    app = launch(studio, port=port, block=False, quiet=True)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60).read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/assets/{name}", timeout=60) as answer:
            assert answer.read() == (gradio_assets() / name).read_bytes()
            assert "immutable" in answer.headers["cache-control"]  # ours, not Gradio's route
        first = page.split('src="./assets/')[1].split('"')[0]  # the page's own entry script
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/assets/{first}", timeout=60) as answer:
            assert answer.read() == (gradio_assets() / first).read_bytes()
    finally:
        app.close()
        studio.close()
