"""Safe file I/O: atomic writes (write, then rename), locked appends, unique names and pickle-free loading."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
from pathlib import Path


def _open_tmp_beside(path: Path) -> tuple[int, Path]:
    """Creates a new temporary file beside `path`; returns its descriptor and name.

    The file gets the mode a plain open() would give `path`: the existing file's mode when it is replaced,
    else 0o666 less the umask (the kernel applies it, so default ACLs apply too), never mkstemp's 0600.
    """
    try:
        keep = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        keep = None
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        if keep is not None:
            with contextlib.suppress(PermissionError):  # another user's file in a shared folder: umask mode
                os.fchmod(fd, keep & 0o777)
        return fd, tmp


def _write_then_rename(path: str | Path, write) -> Path:
    """Calls write(binary file) on a temporary file, syncs it and renames it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_tmp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when something failed (full disk included)
    return path


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Writes `data` to `path` so that readers see the old file or the new one, never half of one."""
    return _write_then_rename(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """atomic_write_bytes of `text` encoded as UTF-8."""
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj, path: str | Path) -> Path:
    """atomic_write_text of `obj` as indented, key-sorted JSON."""
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def atomic_save_torch(obj, path: str | Path) -> Path:
    """torch.save through a temporary file and a rename; `obj` must hold only tensors and plain types."""
    import torch  # here, not at the top: appends and atomic writes should not cost a torch import

    return _write_then_rename(path, lambda f: torch.save(obj, f))


def load_torch_checkpoint(path: str | Path):
    """Loads a checkpoint written by atomic_save_torch, refusing anything but tensors and plain types."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def lock_path(path: str | Path) -> Path:
    """The lock file guarding appends to `path`: `.{stem}.lock` beside it."""
    path = Path(path)
    return path.with_name(f".{path.stem}.lock")


@contextlib.contextmanager
def exclusive_lock(path: str | Path):
    """Holds an exclusive fcntl.flock on lock_path(path) for the block, across processes and threads."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # each open() is its own lock, so threads exclude each other too
        yield
    finally:
        os.close(fd)  # closing releases the lock; the lock file stays, as unlinking it would race


def append_lines_locked(path: str | Path, lines: list[str]) -> None:
    """Appends `lines` (each without a newline) to `path` whole, or not at all, under an exclusive lock.

    One O_APPEND write and an fsync; on any OSError (a full disk included) the file is truncated back to
    its size before the append and the error re-raised, so other writers never see a partial line.
    """
    if not lines:
        return  # nothing to add: do not create the file
    if any("\n" in line for line in lines):
        raise ValueError("append_lines_locked: a line contains a newline")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            _append_or_undo(fd, "".join(line + "\n" for line in lines).encode("utf-8"))
        finally:
            os.close(fd)


def _append_or_undo(fd: int, data: bytes) -> None:
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        data = b"\n" + data  # a writer killed mid-line left a torn line: start ours on a fresh one
    try:
        view = memoryview(data)
        while view:  # write() may take part of the data (a signal, a nearly full disk)
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)  # needs no new space, so it works on a full disk too
        raise


def create_unique(path: str | Path) -> Path:
    """Creates an empty file at `path`, or at `stem-1.suffix`, `stem-2.suffix`, ... if taken; returns it.

    Creation is exclusive (O_EXCL), so concurrent callers never get the same name and no file is replaced.
    """
    path = Path(path)
    for k in range(100_000):
        candidate = path if k == 0 else path.with_name(f"{path.stem}-{k}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name like {path}")
