"""Studio fixtures: a workspace with a checked upload, and a stand-in for the training CLI."""

import stat
import sys

import pytest

from conceptlab.studio.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


@pytest.fixture
def upload(ws, concept_dirs):
    """uploads/broc: the broccoli concept images, stored through the upload check."""
    files = sorted((concept_dirs / "broccoli").glob("*.png"))
    ws.store_images(files, "broc")
    return "broc"


@pytest.fixture
def fake_python(tmp_path):
    """An executable that stands in for `python -m conceptlab.cli.main train ti ...`: it prints what the CLI
    prints and exits as FAKE_MODE says (done, fail, slow: sleeps until a signal, then exits 143)."""
    path = tmp_path / "fake-python"
    path.write_text(f"""#!{sys.executable}
import os, signal, sys, time
mode = os.environ.get("FAKE_MODE", "done")
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(out, exist_ok=True)
if mode == "fail":
    print("conceptlab train ti: error: --concept='x': is broken. Fix it", file=sys.stderr)
    sys.exit(2)
if mode == "slow":
    signal.signal(signal.SIGTERM, lambda *a: (print("terminated at step 1; checkpoint saved"), sys.exit(143)))
    print("train:  10%|#    | 1/10 [00:01<00:09,  1.0it/s, loss=0.5000, lr=5.00e-03]", flush=True)
    time.sleep(60)
    sys.exit(1)
print("learned <t> in 2 steps (final loss 0.1000); files in " + out)
""")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)

