import json
import re

import pytest
from PIL import Image

from conceptlab.cli.main import main
from conceptlab.evaluation.run_report import build_report


def test_report_collects_images_and_metrics(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "grid.png")
    sub = tmp_path / "clf"
    sub.mkdir()
    Image.new("RGB", (8, 8)).save(sub / "confusion.png")
    (sub / "metrics.json").write_text(json.dumps({"accuracy": 0.99, "per_class": {"happy": {"precision": 1.0}}}))
    page = build_report(tmp_path).read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert sorted(srcs) == ["clf/confusion.png", "grid.png"]
    assert "0.99" in page and "happy" in page


def test_report_on_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds nothing conceptlab can report on" in capsys.readouterr().err
    with pytest.raises(Exception, match="is not a folder"):
        build_report(tmp_path / "missing")


def test_report_command_writes_beside_the_run_and_links_its_images(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    Image.new("RGB", (8, 8)).save(run / "grid.png")
    before = sorted(p.name for p in run.iterdir())
    assert main(["report", str(run)]) == 0
    page = tmp_path / "run-report" / "index.html"
    srcs = re.findall(r'src="([^"]+)"', page.read_text())
    assert srcs == ["../run/grid.png"] and (page.parent / srcs[0]).resolve() == (run / "grid.png").resolve()
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written into the run
    assert main(["report", str(run), "--out", str(run / "sub")]) == 2
