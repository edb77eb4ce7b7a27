"""Crash soak: training killed with SIGKILL at random moments, resumed each time, ends bit-identical to a straight run.

Starting Python with torch and diffusers costs many seconds on a shared 2-core machine, so the driver runs as one
subprocess that imports once and forks a child per training run; every kill is a real `kill -9` of that child.
A SIGTERM check runs the driver as a fresh process, the way the CLI runs.
"""

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

DRIVER = r'''
"""Trains tiny textual inversion or LoRA DreamBooth. `serve`: one forked child per JSON job on stdin; `run JOB`: here."""
import json
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

torch.set_num_threads(1)  # forked children must not inherit a thread pool; one thread is also fastest here

from conceptlab.io import atomic_save_torch, atomic_write_json  # noqa: E402
from conceptlab.models.loading import load_pipeline  # noqa: E402
from conceptlab.models.tiny import build_pipeline  # noqa: E402
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig  # noqa: E402
from conceptlab.training.loop import TrainConfig, Trainer  # noqa: E402
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig  # noqa: E402


def method_for(job):
    pipe = load_pipeline(job["model"])
    pipe.set_progress_bar_config(disable=True)
    train = TrainConfig(steps=job["steps"], batch_size=1, lr=job["lr"], checkpoint_every=1, keep_checkpoints=2)
    if job["method"] == "ti":
        cfg = TextualInversionConfig(model=job["model"], train=train,
                                     concepts=[ConceptConfig("<broc>", job["data"], init="broccoli")])
        return TextualInversion(pipe, cfg), cfg
    torch.manual_seed(0)  # peft draws the LoRA's first weights from torch's global generator
    cfg = DreamBoothConfig(model=job["model"], subjects=[SubjectConfig("tuki", job["data"], "monster")], lora=True,
                           rank=2, train=train)
    return DreamBooth(pipe, cfg), cfg


def train(job) -> int:
    method, cfg = method_for(job)
    trainer = Trainer(method, cfg.train, job["out"], config_record=asdict(cfg))
    print("training", os.getpid(), flush=True)
    result = trainer.train(resume=job["resume"])
    if result.stopped != "done":
        return {"interrupted": 130, "terminated": 143}[result.stopped]
    atomic_save_torch(method.trainable_state(), Path(job["out"]) / "final.pt")
    atomic_write_json(result.losses, Path(job["out"]) / "losses.json")
    return 0


def job_exit(job) -> int:
    try:
        if job.get("prepare"):
            build_pipeline("tiny", seed=0).save_pretrained(job["model"])
            return 0
        return train(job)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def serve() -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            os._exit(job_exit(json.loads(line)))
        print("pid", pid, flush=True)
        print("exit", pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)


if __name__ == "__main__":
    serve() if sys.argv[1] == "serve" else sys.exit(job_exit(json.loads(sys.argv[2])))
'''

STEPS = {"ti": 24, "lora": 24}
LR = {"ti": 5e-2, "lora": 1e-2}
KILLS = 10


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class Zygote:
    """The driver in `serve` mode: imports once, then forks a child per job; reads its lines on a thread."""

    def __init__(self, driver: Path):
        self.proc = subprocess.Popen([sys.executable, str(driver), "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env())
        self.lines, self.pending = queue.Queue(), []
        threading.Thread(target=lambda: [self.lines.put(x.split()) for x in self.proc.stdout], daemon=True).start()
        self.wait_for(lambda words: words == ["ready"], 300)

    def wait_for(self, match, timeout: float = 300) -> list[str]:
        """The first line (split) that `match` accepts; other lines wait for a later call."""
        for words in self.pending:
            if match(words):
                self.pending.remove(words)
                return words
        deadline = time.monotonic() + timeout
        while True:
            words = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if match(words):
                return words
            self.pending.append(words)

    def start(self, job: dict) -> int:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return int(self.wait_for(lambda w: w[0] == "pid")[1])

    def started_or_exited(self, pid: int) -> bool:
        """True once the child says it is training; False if it exited first."""
        words = self.wait_for(lambda w: w[:2] in (["training", str(pid)], ["exit", str(pid)]))
        if words[0] == "exit":
            self.pending.append(words)
        return words[0] == "training"

    def exited(self, pid: int) -> bool:
        """Whether the zygote has said that child `pid` exited (without waiting)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.pending.append(self.lines.get_nowait())
        return any(w[:2] == ["exit", str(pid)] for w in self.pending)

    def exit_code(self, pid: int) -> int:
        return int(self.wait_for(lambda w: w[:2] == ["exit", str(pid)])[2])

    def run(self, job: dict) -> int:
        return self.exit_code(self.start(job))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def soak(tmp_path_factory, concept_dirs):
    root = tmp_path_factory.mktemp("soak")
    (root / "driver.py").write_text(DRIVER)
    zygote = Zygote(root / "driver.py")
    model = root / "model"
    assert zygote.run({"prepare": True, "model": str(model)}) == 0
    straight = {}

    def job(method, out, resume=False):
        return {"method": method, "model": str(model), "data": str(concept_dirs / "broccoli"), "out": str(out),
                "steps": STEPS[method], "lr": LR[method], "resume": resume}

    def reference(method):
        """The straight run's final weights and losses, and seconds per step (which sizes the kill windows)."""
        if method not in straight:
            out = root / f"straight-{method}"
            pid = zygote.start(job(method, out))
            assert zygote.started_or_exited(pid)
            t0 = time.monotonic()
            assert zygote.exit_code(pid) == 0
            straight[method] = (*final(out), (time.monotonic() - t0) / STEPS[method])
        return straight[method]

    yield zygote, job, reference, root
    zygote.close()


def final(out: Path):
    return torch.load(out / "final.pt", weights_only=True), json.loads((out / "losses.json").read_text())


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "trainable weights differ"


def tmp_folders(root: Path) -> dict[str, int]:
    """The checkpoint writes under way (or left by a kill): .tmp folder names and inodes."""
    found = {}
    for p in root.iterdir() if root.is_dir() else []:
        try:
            found[p.name] = p.stat().st_ino if p.name.endswith(".tmp") else None
        except FileNotFoundError:  # renamed or removed while we looked
            pass
    return {name: ino for name, ino in found.items() if ino is not None}


def kill_at_random(zygote: Zygote, pid: int, out: Path, rng: random.Random, step_seconds: float, in_write: bool):
    """SIGKILLs child `pid` a random time into its run, or (`in_write`) a few ms into its next checkpoint write."""
    root = out / "checkpoints"
    if in_write:  # a new .tmp folder, or one a kill left behind being written afresh (new inode)
        old, deadline = tmp_folders(root), time.monotonic() + 10 * step_seconds + 10
        while time.monotonic() < deadline and not zygote.exited(pid):
            if any(old.get(name) != ino for name, ino in tmp_folders(root).items()):
                break
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.005))
    else:
        time.sleep(rng.uniform(0, 3 * step_seconds))
    if not zygote.exited(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("method", ["ti", "lora"])
def test_sigkill_at_random_moments_then_resume_ends_bit_identical(soak, method):
    zygote, job, reference, root = soak
    weights, losses, step_seconds = reference(method)
    out, rng, killed, in_writes = root / f"soak-{method}", random.Random(f"soak-{method}"), 0, 0
    for k in range(KILLS):
        before = tmp_folders(out / "checkpoints")
        pid = zygote.start(job(method, out, resume=k > 0))
        if zygote.started_or_exited(pid):
            kill_at_random(zygote, pid, out, rng, step_seconds, in_write=k % 2 == 1)
        code = zygote.exit_code(pid)
        if code == 0:
            break
        assert code == -signal.SIGKILL, f"run {k} failed with exit code {code}"
        killed += 1
        in_writes += any(before.get(name) != ino for name, ino in tmp_folders(out / "checkpoints").items())
    else:
        assert zygote.run(job(method, out, resume=True)) == 0
    assert killed >= KILLS // 2, f"only {killed} kills landed before the run finished"
    assert in_writes >= 1, "no kill landed inside a checkpoint write"
    print(f"{method}: {killed} kills, {in_writes} inside checkpoint writes")
    got_weights, got_losses = final(out)
    assert_same(got_weights, weights)
    assert got_losses == losses


def test_sigterm_on_a_fresh_process_saves_the_step_then_resume_ends_bit_identical(soak):
    zygote, job, reference, root = soak
    weights, losses, step_seconds = reference("ti")
    out = root / "sigterm-ti"
    proc = subprocess.Popen([sys.executable, str(root / "driver.py"), "run", json.dumps(job("ti", out))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    assert proc.stdout.readline().split()[0] == "training"
    time.sleep(4 * step_seconds)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    said = stdout.split("terminated at step ")[1]
    step = int(said.split(";")[0])
    assert 0 < step < STEPS["ti"] and f"step-{step:06d}. Run again with --resume." in said
    assert (out / "checkpoints" / f"step-{step:06d}" / "manifest.json").is_file()
    assert zygote.run(job("ti", out, resume=True)) == 0
    got_weights, got_losses = final(out)
    assert_same(got_weights, weights)
    assert got_losses == losses
