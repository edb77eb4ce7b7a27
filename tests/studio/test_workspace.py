"""The workspace: names that cannot escape it, uploads checked by the validation layer, paths kept inside."""

import os

import pytest
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.studio.workspace import FOLDERS, Workspace, check_name, check_token, slug


def test_layout_is_created(ws):
    assert all((ws.root / name).is_dir() for name in FOLDERS)


@pytest.mark.parametrize("name", ["../evil", "a/b", "/etc", "..", ".hidden", "", "a b", "x" * 65, "a..b", "ok\x00",
                                  "C:\\x", "~root"])
def test_names_that_could_escape_or_confuse_are_refused(ws, name):
    with pytest.raises(InputError, match="may hold only letters"):
        check_name("run name", name)
    with pytest.raises(InputError):
        ws.folder("runs", name)


def test_good_names_and_slugs():
    assert check_name("n", "my-run_2.v1") == "my-run_2.v1"
    assert slug("../My Cat!") == "My-Cat" and slug("///") == "item"
    assert check_token("t", " <my-cat> ") == "<my-cat>"
    for bad in ("<a,b>", "a=b", "two words", "../x", "<>", "<a/b>"):
        with pytest.raises(InputError, match="one new word"):
            check_token("token", bad)


def test_inside_follows_symlinks_and_refuses_absolute_paths(ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ws.root / "uploads" / "link")
    with pytest.raises(InputError, match="outside the studio's workspace"):
        ws.inside(ws.root / "uploads" / "link")
    with pytest.raises(InputError, match="outside"):
        ws.inside("/etc/passwd")
    with pytest.raises(InputError, match="outside"):
        ws.inside("uploads/../../outside")
    assert ws.inside("uploads") == ws.root / "uploads"


def test_upload_checks_every_file_before_writing_any(ws, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match=r"images='notes.png': is not a readable image"):
        ws.store_images([good, text], "set")
    assert not (ws.root / "uploads" / "set").exists()
    folder = ws.store_images([good], "set")
    stored = Image.open(folder / "000.png")
    assert stored.mode == "RGB" and stored.getpixel((0, 0)) == (255, 127, 127)  # RGBA on white, as the CLI does
    with pytest.raises(InputError, match="is taken"):
        ws.store_images([good], "set")


def test_captions_travel_with_their_pictures_and_the_training_loader_reads_them(ws, tmp_path):
    """cat.txt beside cat.png (kohya's layout) is stored as 000.txt beside 000.png, where the training data
    loader finds it; a caption without its picture, or not text, refuses the whole upload."""
    from conceptlab.training.data import read_captions

    pics = []
    for k, name in enumerate(("cat", "dog")):
        pics.append(tmp_path / f"{name}.png")
        Image.new("RGB", (8, 8), (k * 200, 0, 0)).save(pics[-1])
    (tmp_path / "dog.txt").write_text("a photo of a   dog\non grass\n")
    folder = ws.store_images([pics[0], tmp_path / "dog.txt", pics[1]], "pets")
    assert sorted(p.name for p in folder.iterdir()) == ["000.png", "001.png", "001.txt"]
    assert read_captions(folder, ["001.png"], "images") == ["a photo of a dog on grass"]
    (tmp_path / "cow.txt").write_text("a cow")
    with pytest.raises(InputError, match=r"images='cow.txt': is a caption with no picture of the same name"):
        ws.store_images([*pics, tmp_path / "cow.txt"], "more")
    (tmp_path / "cat.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match=r"images='cat.txt': is not UTF-8 text"):
        ws.store_images([*pics, tmp_path / "cat.txt"], "more")
    (tmp_path / "cat.txt").write_text("word " * 5000)  # read no further than a caption's size
    with pytest.raises(InputError, match=r"images='cat.txt': is 25000 bytes, longer than a caption"):
        ws.store_images([*pics, tmp_path / "cat.txt"], "more")
    assert not (ws.root / "uploads" / "more").exists()


def test_upload_refuses_a_decompression_bomb(ws, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # 64 megapixels, a few kB on disk
    with pytest.raises(InputError, match="decompression bomb"):
        ws.store_images([bomb], "bombs")


def test_second_studio_on_one_workspace_is_refused(ws):
    ws.claim()
    with pytest.raises(InputError, match="in use by another running studio"):
        Workspace(ws.root).claim()
