"""benchmarks/record.py turns a run's results into results-page records that scripts/docs.py renders."""

import importlib.util
from pathlib import Path

from benchmarks.record import merge, slug

ROOT = Path(__file__).resolve().parents[1]


def _docs():
    spec = importlib.util.spec_from_file_location("docs_script", ROOT / "scripts" / "docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(name, ours, reference, module="bench_studio"):
    return {"name": name, "ours": ours, "reference": reference, "ratio": ours / reference, "unit": "s",
            "target": "ours < 2 s", "module": module, "load": "0.5 0.4 0.3", "detail": {"ours": [ours] * 5}}


def test_records_land_in_their_modules_table_and_render():
    page = {"title": "Speed", "tables": [{"title": "By hand", "columns": [], "rows": ["kept"]}],
            "records": [{"id": "kept"}]}
    rows = [_row("studio first load (cold), median", 1.5, 0.9), _row("inversion: direct vs null-text", 2.0, 8.0,
                                                                       "bench_editing")]
    out = merge(page, rows, "2026-11-30", "abc1234", "python -m benchmarks.run")
    ids = [slug(r["name"]) for r in rows]
    assert ids[0] == "bench-studio-first-load-cold-median"
    titles = {t["title"]: t["rows"] for t in out["tables"]}
    assert titles["By hand"] == ["kept"] and len(titles) == 3  # one new table per module
    assert [ids[0]] in titles.values() and [ids[1]] in titles.values()
    rendered = _docs().render_table(out["tables"][1], {r["id"]: r for r in out["records"]})
    assert "| 1.5 s | 0.9 s | 1.67x | ours < 2 s |" in rendered[2]
    assert next(r for r in out["records"] if r["id"] == ids[0])["samples"] == "5 per side"


def test_a_later_run_replaces_its_record():
    page = merge({"tables": [], "records": []}, [_row("x", 1.0, 2.0)], "2026-11-29", "a", "cmd")
    page = merge(page, [_row("x", 3.0, 2.0)], "2026-11-30", "b", "cmd")
    assert len(page["records"]) == 1 and page["records"][0]["metrics"]["ours"] == 3.0
    assert page["records"][0]["date"] == "2026-11-30" and page["tables"][0]["rows"] == ["bench-x"]
