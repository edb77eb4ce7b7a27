"""The studio's workspace: one folder that holds everything the studio reads, writes and serves.

    WORKSPACE/
      uploads/NAME/        images a person uploaded, each checked and re-encoded as PNG
      runs/NAME/           training runs (the --out of `conceptlab train ...`): checkpoints/, previews/, <token>/
      concepts/NAME/       embeddings and LoRAs made in the studio (mixes, conversions, checked uploads)
      generations/NAME/    generated images with their settings embedded, and generations.jsonl
      edits/NAME/          Prompt-to-Prompt edits and inversions
      evaluations/NAME/    scores of a folder: tables, confusion matrices, index.html (the report)
      jobs/ID/             one training job: job.json (status, settings, pid, times) and log.txt
      .cache/              the web server's own copies of files it shows (gradio's temp folder)

Every name a person types (a run, a token, a data set) is checked here before it becomes a path, and every
path is checked to lie inside the workspace after symlinks are resolved, so nothing can reach outside it.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

from conceptlab.errors import InputError
from conceptlab.io import atomic_write_text

FOLDERS = ("uploads", "runs", "concepts", "generations", "edits", "evaluations", "jobs", ".cache")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# a placeholder token: one new word, optionally in <angle brackets>; no ',' or '=' (the --concept spec's
# separators), no space, no path characters
TOKEN = re.compile(r"<?[A-Za-z0-9][A-Za-z0-9_-]{0,40}>?")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per image; a training photo is a few MB
MAX_UPLOAD_FILES = 64


def slug(text: str, fallback: str = "item") -> str:
    """A name NAME accepts, made from any text: '../My Cat!' -> 'My-Cat'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-._")[:64]
    return cleaned or fallback


def check_name(argument: str, value) -> str:
    """`value` if it is a safe single folder name (letters, digits, '.', '-', '_'; no '/', no leading dot)."""
    if not isinstance(value, str) or not NAME.fullmatch(value) or ".." in value:
        raise InputError(argument, value, "may hold only letters, digits, '.', '-' and '_' (at most 64, starting "
                         "with a letter or digit; no '/' or '..')", f"e.g. {slug(str(value or ''), 'my-run')!r}")
    return value


def check_token(argument: str, value) -> str:
    """`value` if it is a usable placeholder token such as '<my-cat>'."""
    if not isinstance(value, str) or not TOKEN.fullmatch(value.strip()):
        raise InputError(argument, value, "is not one new word (letters, digits, '-' and '_', optionally in <>)",
                         f"e.g. '<{slug(str(value or ''), 'my-concept').replace('.', '-')[:40]}>'")
    return value.strip()


class Workspace:
    """The folder layout above, with every path checked to stay inside it."""

    def __init__(self, root: str | Path):
        from conceptlab.validation import output_dir

        self.root = output_dir("--workspace", root).resolve()
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # ---------------------------------------------------------------- paths
    def inside(self, path: str | Path, argument: str = "path") -> Path:
        """`path` resolved (symlinks followed), if it lies inside the workspace; InputError otherwise."""
        resolved = (self.root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise InputError(argument, str(path), "lies outside the studio's workspace",
                             f"Use a file inside {self.root}")
        return resolved

    def folder(self, kind: str, name: str, argument: str = "name") -> Path:
        """WORKSPACE/kind/name for a checked `name`; not created."""
        if kind not in FOLDERS:
            raise ValueError(f"unknown workspace folder {kind!r}")
        return self.inside(self.root / kind / check_name(argument, name), argument)

    def new_folder(self, kind: str, name: str, argument: str = "name") -> Path:
        """Creates WORKSPACE/kind/name; refuses a name that is taken."""
        path = self.folder(kind, name, argument)
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            raise InputError(argument, name, f"is taken ({kind}/{name} exists)", "Choose another name") from None
        return path

    def unique_name(self, kind: str, base: str) -> str:
        """`base`, or `base-2`, `base-3`, ... whichever is free under WORKSPACE/kind."""
        base = slug(base)[:56]
        name, k = base, 2
        while (self.root / kind / name).exists():
            name, k = f"{base}-{k}", k + 1
        return name

    def stamped(self, kind: str, label: str) -> str:
        """A free name like '20250101-120000-label' (sorting by name sorts by time)."""
        return self.unique_name(kind, f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(label)[:40]}")

    def relative(self, path: str | Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    # ---------------------------------------------------------------- one studio per workspace
    def claim(self) -> None:
        """Takes the workspace's lock for this process: two studios on one workspace would run jobs twice."""
        fd = os.open(self.root / ".studio.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError("--workspace", str(self.root), "is in use by another running studio",
                             "Stop that studio, or pass another --workspace") from None
        self._lock_fd = fd

    # ---------------------------------------------------------------- uploads
    def store_images(self, files: list, name: str, argument: str = "images") -> Path:
        """Checks every uploaded file with the validation layer, then writes each picture as PNG into
        uploads/NAME/, and each caption (NAME.txt beside a picture of the same name, kohya's layout) beside it.

        Nothing is written unless every file is a readable image within the limits, or a caption that names
        one of them, so a refused upload leaves no half-filled folder; re-encoding drops whatever else a file
        carried (metadata, trailers)."""
        from conceptlab.imaging import save_image
        from conceptlab.validation import open_image

        paths = [Path(f if isinstance(f, str | os.PathLike) else f.name) for f in (files or [])]  # paths or tempfiles
        texts = [p for p in paths if p.suffix.lower() == ".txt"]
        paths = [p for p in paths if p.suffix.lower() != ".txt"]
        if not paths:
            raise InputError(argument, None, "no images uploaded", "Drop 3-12 pictures of the concept")
        if len(paths) + len(texts) > MAX_UPLOAD_FILES:
            raise InputError(argument, f"{len(paths) + len(texts)} files", f"is more than {MAX_UPLOAD_FILES}",
                             "Upload 3-12 pictures of the concept (and their captions)")
        images = []
        for path in paths:
            if path.is_file() and path.stat().st_size > MAX_UPLOAD_BYTES:
                raise InputError(argument, path.name, f"is {path.stat().st_size / 2**20:.1f} MB",
                                 f"Use images under {MAX_UPLOAD_BYTES // 2**20} MB")
            try:
                images.append(open_image(argument, path))
            except InputError as e:  # name the file as the person knows it, not gradio's temporary path
                raise InputError(argument, path.name, e.problem, e.fix) from None
        captions = _captions(texts, [p.stem for p in paths], argument)
        folder = self.new_folder("uploads", name, "data set name")
        for k, (image, path) in enumerate(zip(images, paths)):
            save_image(image, folder / f"{k:03d}.png")
            if path.stem in captions:
                atomic_write_text(captions[path.stem] + "\n", folder / f"{k:03d}.txt")
        return folder

    def image_folders(self) -> list[str]:
        """Names of the upload folders (training sets), newest first."""
        root = self.root / "uploads"
        return sorted((p.name for p in root.iterdir() if p.is_dir()), reverse=True)

    def image_sets(self) -> list[str]:
        """Folders of images a person may score: uploads, generations and edits, as 'kind/name'."""
        out = []
        for kind in ("generations", "uploads", "edits"):
            out += sorted((f"{kind}/{p.name}" for p in (self.root / kind).iterdir() if p.is_dir()), reverse=True)
        return out


MAX_CAPTION_CHARS = 2000


def _captions(texts: list[Path], stems: list[str], argument: str) -> dict[str, str]:
    """{picture stem: its caption} from uploaded .txt files; a caption without its picture, one that is not
    UTF-8 text or one too long is refused by name."""
    out = {}
    for path in texts:
        if path.stem not in stems:
            raise InputError(argument, path.name, "is a caption with no picture of the same name",
                             f"Upload it with its picture ({path.stem}.png or .jpg), or leave it out")
        if path.stat().st_size > MAX_CAPTION_CHARS * 4:  # 4 bytes: UTF-8's longest character
            raise InputError(argument, path.name, f"is {path.stat().st_size} bytes, longer than a caption",
                             f"Write one line of at most {MAX_CAPTION_CHARS} characters")
        try:
            text = path.read_bytes().decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InputError(argument, path.name, "is not UTF-8 text", "Save the caption as plain UTF-8 text") from None
        if not text or len(text) > MAX_CAPTION_CHARS or "\x00" in text:
            raise InputError(argument, path.name, f"is empty or longer than {MAX_CAPTION_CHARS} characters",
                             "Write one line describing the picture")
        out[path.stem] = " ".join(text.split())
    return out
