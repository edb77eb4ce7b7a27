"""`conceptlab studio` as its own process, killed while a job trains and started again: the job is shown as it
really is (still running, then interrupted when its process dies too) and resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from tests.ports import free_port  # noqa: E402


def _serve(workspace, port, model):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "conceptlab.cli.main", "studio", "--workspace", str(workspace),
                             "--port", str(port), "--model", str(model)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
            return proc, Client(f"http://127.0.0.1:{port}/", verbose=False)
        except OSError:
            assert proc.poll() is None, "the studio exited while starting"
            assert time.monotonic() < deadline, "the studio did not start"
            time.sleep(0.5)


def _status_until(client, job, text, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        status, _, _, log, _ = client.predict(job, api_name="/job_status")
        if text in status:
            return status, log
        assert time.monotonic() < deadline, f"waited for {text!r}; status: {status}\n{log}"
        time.sleep(1)


@pytest.mark.slow
def test_kill_the_studio_while_a_job_trains_then_restart_and_resume(tmp_path, tiny_dir, concept_dirs):
    ws, port = tmp_path / "ws", free_port()
    studio, client = _serve(ws, port, tiny_dir)
    try:
        files = [handle_file(str(p)) for p in sorted((concept_dirs / "broccoli").glob("*.png"))]
        client.predict(files, "broc", api_name="/upload_images")
        job = client.predict("broc", "<broc>", "broccoli", 5000, 5e-3, 1, 5, 0, str(tiny_dir),
                             api_name="/train_start")["value"]
        _status_until(client, job, "checkpoint at step")
        os.kill(studio.pid, signal.SIGKILL)  # the web server dies; the training process does not
        studio.wait()
        studio, client = _serve(ws, port, tiny_dir)
        status, _ = _status_until(client, job, ": running")  # shown as it really is
        pid = json.loads((ws / "jobs" / job / "job.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # now the training dies too, without saving
        status, _ = _status_until(client, job, ": interrupted")
        step = int(status.split("checkpoint at step ")[1].split()[0].rstrip(".,"))
        assert step >= 2
        client.predict(job, api_name="/train_resume")
        status, log = _status_until(client, job, ": running")
        deadline = time.monotonic() + 120
        while "resuming" not in log and time.monotonic() < deadline:
            status, _, _, log, _ = client.predict(job, api_name="/job_status")
            time.sleep(1)
        assert f"checkpoints/step-{step:06d} at step {step} " in log  # the loop's own line: it resumed there
        client.predict(job, api_name="/train_cancel")
        status, log = _status_until(client, job, ": cancelled")
        assert "terminated at step" in log
    finally:
        job_file = ws / "jobs" / "broc" / "job.json"
        if job_file.is_file():  # a test that failed half-way leaves no training process behind
            pid = json.loads(job_file.read_text()).get("pid")
            if pid and os.path.exists(f"/proc/{pid}") and str(ws) in open(f"/proc/{pid}/cmdline").read():
                os.kill(pid, signal.SIGKILL)
        if studio.poll() is None:
            studio.send_signal(signal.SIGINT)  # the studio stops its job with a checkpoint, then exits
            try:
                studio.wait(90)
            except subprocess.TimeoutExpired:
                studio.kill()
