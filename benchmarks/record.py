"""Adds a benchmark run's results (the JSON `benchmarks/run.py --out` writes) to a results page's JSON, so that
docs/results/benchmarks.md is generated from what the benchmarks measured, never copied by hand.

    python -m benchmarks.record RESULTS_JSON [--page docs/results/data/benchmarks.json] [--table TITLE]

Each result becomes one record (`bench-` + its name as a slug; a later run of the same benchmark replaces it):
our figure, the reference measured in the same run, the ratio, the target, the run's date, commit, command and
load average. The records are listed in one table per benchmark module (created when missing, titled by
--table or by the module's TITLE); tables written by hand keep their own rows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import time
from pathlib import Path

PAGE = Path("docs/results/data/benchmarks.json")
COLUMNS = [{"header": "record", "value": "id"}, {"header": "what", "value": "settings.what"},
           {"header": "conceptlab", "value": "metrics.ours_text"},
           {"header": "reference (same run)", "value": "metrics.reference_text"},
           {"header": "ratio", "value": "metrics.ratio", "format": "x"},
           {"header": "target", "value": "settings.target"}]


def slug(name: str) -> str:
    return "bench-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _figure(value: float, unit: str) -> str:
    number = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{number} {unit}".strip()


def to_record(row: dict, date: str, commit: str, command: str) -> dict:
    """One benchmark result as a results-page record."""
    detail = row.get("detail") or {}
    samples = detail.get("images") or detail.get("repeats") or len(detail.get("ours", [])) or None
    return {"id": slug(row["name"]), "date": date, "commit": commit, "model": row.get("model", "as the benchmark says"),
            "seeds": "fixed in the benchmark", "samples": f"{samples} per side" if samples else "not recorded",
            "command": command, "settings": {"what": row["name"], "target": row["target"]},
            "metrics": {"ours": row["ours"], "reference": row["reference"], "ratio": row["ratio"],
                        "unit": row["unit"], "ours_text": _figure(row["ours"], row["unit"]),
                        "reference_text": _figure(row["reference"], row["unit"])},
            **({"note": f"Load average during the run: {row['load']}."} if row.get("load") else {}),
            "source": "the run's results JSON (benchmarks/run.py --out), added with benchmarks/record.py"}


def _title(module: str | None, given: str | None) -> str:
    if given:
        return given
    if module:
        bench = importlib.import_module(f"benchmarks.{module}")
        return getattr(bench, "TITLE", None) or module
    return "Other benchmark runs"


def merge(page: dict, rows: list[dict], date: str, commit: str, command: str, table: str | None = None) -> dict:
    """`page` with the rows' records added (replacing records of the same id) and listed in their tables."""
    records = {r["id"]: r for r in page.get("records", [])}
    tables = page.setdefault("tables", [])
    for row in rows:
        rec = to_record(row, date, commit, row.get("command") or command)
        records[rec["id"]] = rec
        title = _title(row.get("module"), table)
        found = next((t for t in tables if t["title"] == title), None)
        if found is None:
            found = {"title": title, "columns": COLUMNS, "rows": []}
            tables.append(found)
        if rec["id"] not in found["rows"]:
            found["rows"].append(rec["id"])
    page["records"] = list(records.values())
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the JSON benchmarks/run.py --out wrote")
    parser.add_argument("--page", type=Path, default=PAGE)
    parser.add_argument("--table", default=None, help="the table's title (default: the benchmark module's)")
    parser.add_argument("--command", default="python -m benchmarks.run", help="the command that ran them")
    args = parser.parse_args()
    rows = json.loads(args.results.read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    date = time.strftime("%Y-%m-%d", time.localtime(args.results.stat().st_mtime))
    page = merge(json.loads(args.page.read_text()), rows, date, commit, args.command, args.table)
    args.page.write_text(json.dumps(page, indent=2, ensure_ascii=False) + "\n")
    print(f"{len(rows)} records into {args.page}; run `python scripts/docs.py results` to regenerate the page")


if __name__ == "__main__":
    main()
