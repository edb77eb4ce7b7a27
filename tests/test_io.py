"""conceptlab.io: atomic writes keep the usual file mode, locked appends never lose or tear lines."""

import errno
import json
import multiprocessing as mp
import os
import stat
import threading

import pytest

from conceptlab.io import (
    append_lines_locked,
    atomic_save_torch,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    create_unique,
    load_torch_checkpoint,
)

WRITERS, APPENDS = 4, 40
PAD = "x" * 6000  # lines longer than a pipe buffer and a page, so a torn write would show


def _append_many(path, writer):
    for i in range(APPENDS):
        append_lines_locked(path, [json.dumps({"w": writer, "i": i, "j": j, "pad": PAD}) for j in range(3)])


def _check_all_lines(path, writers):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["w"], r["i"], r["j"]) for r in rows) == [
        (w, i, j) for w in writers for i in range(APPENDS) for j in range(3)]
    for w in writers:  # one call's lines stay together and in order
        mine = [(r["i"], r["j"]) for r in rows if r["w"] == w]
        assert mine == [(i, j) for i in range(APPENDS) for j in range(3)]


def test_append_lines_locked_from_threads_and_processes(tmp_path):
    path = tmp_path / "log.jsonl"
    ctx = mp.get_context("spawn")  # a fresh interpreter: no locks or threads inherited from pytest
    procs = [ctx.Process(target=_append_many, args=(path, f"p{k}")) for k in range(WRITERS)]
    threads = [threading.Thread(target=_append_many, args=(path, f"t{k}")) for k in range(WRITERS)]
    for w in procs + threads:
        w.start()
    for w in procs + threads:
        w.join(120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    _check_all_lines(path, sorted([f"p{k}" for k in range(WRITERS)] + [f"t{k}" for k in range(WRITERS)]))
    assert (tmp_path / ".log.lock").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        ".log.lock", "log.jsonl"]


def test_failed_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    append_lines_locked(path, ['{"a": 1}'])
    before = path.read_bytes()
    real_write, calls = os.write, []

    def half_then_full(fd, data):  # the disk fills up in the middle of the append
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError) as err:
        append_lines_locked(path, ['{"b": 2}', '{"c": 3}'])
    assert err.value.errno == errno.ENOSPC and len(calls) == 2
    monkeypatch.undo()
    assert path.read_bytes() == before
    append_lines_locked(path, ['{"d": 4}'])  # the lock was released
    assert path.read_text() == '{"a": 1}\n{"d": 4}\n'


def test_append_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"tor')  # a writer killed mid-line, before this code existed
    append_lines_locked(path, ['{"b": 2}'])
    assert path.read_text().splitlines()[-1] == '{"b": 2}'
    with pytest.raises(ValueError, match="newline"):
        append_lines_locked(path, ['{"c":\n3}'])


def test_create_unique_gives_each_caller_its_own_name(tmp_path):
    names, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        names.append(create_unique(tmp_path / "0000-seed1.png").name)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == sorted(["0000-seed1.png"] + [f"0000-seed1-{k}.png" for k in range(1, 8)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def _save_torch(path):
    import torch  # only here: the other writes, and the spawned appenders, need no torch

    return atomic_save_torch({"w": torch.ones(2)}, path)


WRITES = {
    "bytes": lambda p: atomic_write_bytes(b"x", p),
    "text": lambda p: atomic_write_text("x", p),
    "json": lambda p: atomic_write_json({"x": 1}, p),
    "torch": _save_torch,
}


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("kind", sorted(WRITES))
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask, mode, kind):
    old = os.umask(umask)
    try:
        path = WRITES[kind](tmp_path / "sub" / "f")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert sorted(p.name for p in path.parent.iterdir()) == ["f"]  # no temporary file left


def test_replacing_a_file_keeps_its_mode_and_a_failed_write_keeps_the_file(tmp_path):
    path = tmp_path / "secret.json"
    atomic_write_json({"v": 1}, path)
    path.chmod(0o640)
    atomic_write_json({"v": 2}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and json.loads(path.read_text()) == {"v": 2}
    with pytest.raises(TypeError):
        atomic_write_bytes("not bytes", path)
    assert json.loads(path.read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


def test_torch_checkpoint_round_trip(tmp_path):
    import torch

    path = atomic_save_torch({"w": torch.arange(3.0), "step": 7}, tmp_path / "c.pt")
    back = load_torch_checkpoint(path)
    assert back["step"] == 7 and torch.equal(back["w"], torch.arange(3.0))
