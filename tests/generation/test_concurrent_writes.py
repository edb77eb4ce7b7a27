"""Output folders stay consistent: concurrent runs keep all their rows, a full disk leaves no orphans.

Consistent means: every line of generations.jsonl is JSON, every listed image exists, opens and is listed
once, every image in the folder is listed, and no temporary or part file is left.
"""

import json
import multiprocessing as mp
import queue
import re
import subprocess
import traceback
from pathlib import Path

import pytest
from PIL import Image

from conceptlab.imaging import read_settings

WORKERS, ROUNDS, PER_RUN = 6, 3, 2
PROMPT = "a star"  # short: the sizes the file-size limits below are fitted to grow with it


def _context():
    """A forkserver that imports torch and diffusers once, so 6 workers cost one import, not 6.

    Its server is a fresh interpreter (no threads or locks inherited from pytest), like 'spawn'.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["conceptlab.generation.generate", "conceptlab.models.tiny"])
    return ctx


def _load(model_dir):
    import torch

    from conceptlab.models.loading import load_pipeline

    torch.set_num_threads(1)  # 6 workers share 2 cores
    return load_pipeline(str(model_dir))


def _config(n, seed=0, fmt="png"):
    from conceptlab.generation import GenerationConfig

    return GenerationConfig(prompt=PROMPT, n=n, seed=seed, steps=1, batch_size=4, format=fmt)


def _worker(model_dir, out, start, results):
    """Runs ROUNDS generations into `out`, each started together with the other workers'."""
    try:
        from conceptlab.generation import run_generation

        pipe = _load(model_dir)
        for _ in range(ROUNDS):
            start.wait(120)
            rows = run_generation(pipe, _config(PER_RUN), out, model="tiny", progress=False)
            results.put(("rows", [r["file"] for r in rows]))
    except BaseException:  # noqa: BLE001 - the parent shows it
        results.put(("error", traceback.format_exc()))
        raise


def consistent_rows(folder: Path) -> list[dict]:
    """The rows of generations.jsonl, after asserting the folder is consistent (see the module docstring)."""
    log = folder / "generations.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    files = [r["file"] for r in rows]
    assert len(set(files)) == len(files), "two rows point at one image"
    for r in rows:
        with Image.open(folder / r["file"]) as im:
            im.load()
        assert read_settings(folder / r["file"])["file"] == r["file"]
    on_disk = {p.name for p in folder.iterdir() if p.suffix in (".png", ".jpg") and p.name != "grid.png"}
    assert on_disk == set(files), "images not listed, or listed and missing"
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".part" in p.name]
    assert not leftovers
    return rows


def test_concurrent_runs_into_one_folder_keep_every_row(tiny_dir, tmp_path):
    ctx, out = _context(), tmp_path / "out"
    start, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(tiny_dir, out, start, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    returned = []
    for _ in range(WORKERS * ROUNDS):
        kind, value = results.get(timeout=240)
        assert kind == "rows", value
        returned += value
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    rows = consistent_rows(out)
    assert len(rows) == WORKERS * ROUNDS * PER_RUN
    assert sorted(r["file"] for r in rows) == sorted(returned)
    # every run used seeds 0 and 1: the first run to claim a name keeps it, the others get -1, -2, ...
    assert {"0000-seed0.png", "0001-seed1.png"} <= set(returned)
    assert all(re.fullmatch(r"000[01]-seed[01](-\d+)?\.png", f) for f in returned)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".generations.lock"]


def _limited(limit, fn):
    """Calls fn() with writes past `limit` bytes of any file failing with EFBIG, as on a full disk."""
    import resource
    import signal

    from conceptlab.errors import ConceptlabError

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        fn()
    except ConceptlabError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return "no error"


def _full_disk_scenarios(model_dir, root, results):
    """Fills `root/<case>` up to a point where each kind of write fails; puts {case: error message}."""
    try:
        results.put(("done", _run_scenarios(model_dir, Path(root))))
    except BaseException:  # noqa: BLE001 - the parent shows it
        results.put(("error", traceback.format_exc()))


def _run_scenarios(model_dir, root):
    from conceptlab.generation import run_generation

    pipe = _load(model_dir)

    def gen(case, n, seed=0, limit=None):
        run = lambda: run_generation(pipe, _config(n, seed), root / case, model="tiny", progress=False)  # noqa
        return _limited(limit, run) if limit else run()

    gen("calibrate", 20)
    biggest = max(p.stat().st_size for p in (root / "calibrate").glob("*.png"))
    out = {}
    gen("image", 2)
    out["image"] = gen("image", 3, seed=5, limit=biggest // 2)  # the first image does not fit
    part_size = (root / "calibrate" / "generations.jsonl").stat().st_size  # 20 rows, more than an image
    assert part_size > biggest + 256, (part_size, biggest)
    out["part"] = gen("part", 20, limit=biggest + 128)  # all 20 images fit, their rows do not
    gen("log", 20)  # a log longer than an image
    log_size = (root / "log" / "generations.jsonl").stat().st_size
    out["log"] = gen("log", 2, seed=30, limit=log_size + 100)  # the append stops 100 bytes in
    return out


def test_full_disk_leaves_a_consistent_folder(tiny_dir, tmp_path):
    ctx = _context()
    results = ctx.Queue()
    proc = ctx.Process(target=_full_disk_scenarios, args=(tiny_dir, tmp_path, results))
    proc.start()
    try:
        kind, errors = results.get(timeout=240)
    except queue.Empty:
        proc.kill()
        raise
    proc.join(60)
    assert kind == "done", errors
    tail = "images kept and listed in generations.jsonl. Free space and run again"
    assert re.fullmatch(rf"DiskFullError: --out='.*': the disk is full while writing 0000-seed5.png "
                        rf"\(File too large\); 2 {tail}", errors["image"])
    assert re.search(rf"while writing \.generations\.[0-9a-f-]+\.part0\.jsonl \(File too large\); 0 {tail}$",
                     errors["part"])
    assert errors["log"].endswith(f"while writing generations.jsonl (File too large); 20 {tail}")
    for case, listed in (("image", 2), ("part", 0), ("log", 20)):
        assert len(consistent_rows(tmp_path / case)) == listed, case
    assert not (tmp_path / "part" / "generations.jsonl").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 96 KiB tmpfs (a real ENOSPC), where mounting is allowed; else the test is skipped."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def one_thread():
    """One torch thread: on 2 busy cores, more threads spin against each other (10x slower here)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_filling_a_real_disk_leaves_a_consistent_folder(tiny_pipe, small_disk, one_thread):
    from conceptlab.generation import run_generation
    from conceptlab.generation.generate import DiskFullError

    out, listed = small_disk / "out", 0
    for k in range(20):
        try:
            listed += len(run_generation(tiny_pipe, _config(3, seed=10 * k), out, model="tiny", progress=False))
        except DiskFullError as e:
            assert f"; {listed} images kept and listed in generations.jsonl." in str(e)
            break
        assert len(consistent_rows(out)) == listed
    else:
        pytest.fail("the disk never filled up")
    assert len(consistent_rows(out)) == listed > 0
