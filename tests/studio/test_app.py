"""The studio through gradio_client, launched in-process on a free port with the tiny pipeline: generate, a
2-step textual-inversion job to completion and then its token in a prompt, an edit, refused input."""

import os
import socket
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from conceptlab.imaging import read_settings  # noqa: E402
from conceptlab.studio.app import Studio, check_host, launch  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # one torch thread in the training process too: tiny models on two shared cores (see tests/conftest.py)
    studio = Studio(tmp_path_factory.mktemp("studio") / "ws", job_env={"OMP_NUM_THREADS": "1"})
    port = free_port()
    app = launch(studio, port=port, block=False, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))
    yield studio, client, f"http://127.0.0.1:{port}"
    app.close()
    studio.close()


def generate(client, prompt, model, n=2, concepts=(), steps=4):
    return client.predict(prompt, "", 0, n, steps, 7.5, "default", 0, 0, str(model), list(concepts), [], 1.0,
                          api_name="/generate")


def test_generate_saves_images_with_their_settings(served, tiny_dir):
    studio, client, _ = served
    gallery, settings = generate(client, "a sticker of a happy broccoli", tiny_dir)
    assert [g["caption"].split(" · ")[0] for g in gallery] == ["seed 0", "seed 1"]
    assert read_settings(gallery[1]["image"])["seed"] == 1  # the downloaded file carries its settings
    assert settings["prompt"] == "a sticker of a happy broccoli" and settings["steps"] == 4
    (folder,) = (studio.ws.root / "generations").iterdir()
    assert sorted(p.name for p in folder.glob("*.png")) == ["0000-seed0.png", "0001-seed1.png"]


def test_bad_input_is_the_cli_one_line_message(served, tiny_dir):
    _, client, _ = served
    with pytest.raises(AppError, match=r"^--prompt='': is empty\. Pass some text"):
        generate(client, "", tiny_dir)
    with pytest.raises(AppError, match="--model='/no/such/model': no such file or folder"):
        generate(client, "a star", "/no/such/model")


def test_an_upload_that_is_not_an_image_is_refused(served, tmp_path):
    studio, client, _ = served
    fake = tmp_path / "holiday.png"
    fake.write_text("this is text, not a picture")
    with pytest.raises(AppError, match=r"images='holiday.png': is not a readable image \(UnidentifiedImageError\)\. "
                                       r"Pass a PNG, JPEG or WebP file"):
        client.predict([handle_file(str(fake))], "holiday", api_name="/upload_images")
    assert not (studio.ws.root / "uploads" / "holiday").exists()


def test_files_outside_the_workspace_are_not_served(served, tiny_dir):
    _, _, url = served
    for path in ("/etc/passwd", str(tiny_dir / "model_index.json")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/gradio_api/file={path}", timeout=10)
        assert e.value.code in (403, 404)


def test_train_to_completion_then_generate_with_the_token(served, tiny_dir, concept_dirs):
    studio, client, _ = served
    files = [handle_file(str(p)) for p in sorted((concept_dirs / "broccoli").glob("*.png"))]
    client.predict(files, "broc-set", api_name="/upload_images")
    job = client.predict("broc-set", "<broc>", "broccoli", 2, 5e-3, 2, 2, 0, str(tiny_dir), api_name="/train_start")
    job = job["value"]  # the job list's update: the new job is selected
    deadline = time.monotonic() + 150
    while True:
        status, _, preview, log, _ = client.predict(job, api_name="/job_status")
        if "done" in status or "failed" in status or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert f"**{job}**: done — step 2 of 2" in status, log
    assert preview is not None and "learned <broc> in 2 steps" in log
    client.predict(api_name="/concepts")
    name = f"runs/{job}/broc"
    meta = client.predict(name, api_name="/concept")[0]
    assert meta["token"] == "<broc>" and meta["steps"] == 2
    gallery, settings = generate(client, "a sticker of a <broc>", tiny_dir, n=1, concepts=[name])
    assert len(gallery) == 1 and settings["prompt"] == "a sticker of a <broc>"


def test_edit_generated_and_an_inverted_photo(served, tiny_dir, concept_dirs):
    _, client, _ = served
    args = [None, "ddim", [], str(tiny_dir), "auto", 0.8, 0.4, "", 1, "", "attention", 0, 4, 7.5]
    gallery, mask, info = client.predict("a sticker of a happy broccoli", "a sticker of a sad broccoli", *args,
                                         api_name="/edit")
    assert [g["caption"] for g in gallery] == ["source", "edit"] and info.startswith("mode: **replace**")
    photo = handle_file(str(sorted((concept_dirs / "broccoli").glob("*.png"))[0]))
    args[0] = photo
    gallery, mask, info = client.predict("a sticker of a happy broccoli", "a sticker of a sad broccoli", *args,
                                         api_name="/edit")
    assert "ddim inversion: reconstruction PSNR" in info and gallery[0]["caption"] == "photo (reconstructed)"


def test_host_beyond_loopback_needs_auth():
    from conceptlab.cli.main import main
    from conceptlab.errors import InputError

    check_host("127.0.0.1", None), check_host("localhost", None), check_host("::1", None)
    check_host("0.0.0.0", ("me", "pw"))
    with pytest.raises(InputError, match="without a password"):
        check_host("0.0.0.0", None)
    assert main(["studio", "--host", "0.0.0.0", "--workspace", "/nonexistent-never-made"]) == 2
    assert main(["studio", "--auth", "nopassword"]) == 2
