"""Weight soups: the weighted mean of several fine-tunes of one base model (Wortsman et al., ICML 2022, "Model soups").

Full fine-tunes of one base model trained with different seeds (or settings) land near each other in weight space,
and their mean often generates better than any one of them: each run's own errors partly cancel. A soup is written
as a run folder of its own (pipeline/ and training.json), so `generate`, `edit` and `evaluate dreambooth` take it
like any finished run.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from conceptlab.errors import InputError
from conceptlab.io import atomic_write_json

WEIGHT_SUFFIX = ".safetensors"
RUN_FIX = "Pass the --out folders of finished `conceptlab train dreambooth` runs (full fine-tunes, not --lora)"


@dataclass
class SoupConfig:
    """What a soup was made of; saved in its training.json under "soup"."""

    runs: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # normalized to sum 1
    seeds: list[int | None] = field(default_factory=list)  # each run's training seed, as its training.json says
    differ: list[str] = field(default_factory=list)  # settings the runs' configs disagree on, besides the seed


def soup_state_dicts(states: list[dict[str, torch.Tensor]], weights: list[float],
                     what: str = "runs") -> dict[str, torch.Tensor]:
    """sum_i w_i * state_i, accumulated in float32 and cast back to each tensor's dtype; integer tensors (buffers such
    as position ids) must agree. InputError naming the first key or shape that differs."""
    first = states[0]
    for k, state in enumerate(states[1:], 1):
        if state.keys() != first.keys():
            diff = sorted(state.keys() ^ first.keys())
            raise InputError(what, diff[:3], f"run {k + 1} holds other weights than run 1 (another model family?)",
                             "Soup fine-tunes of one base model")
        bad = next((n for n in first if state[n].shape != first[n].shape), None)
        if bad:
            raise InputError(what, bad, f"has shape {tuple(state[bad].shape)} in run {k + 1}, "
                             f"{tuple(first[bad].shape)} in run 1", "Soup fine-tunes of one base model")
    out = {}
    for name, t in first.items():
        if not t.is_floating_point():
            if any(not torch.equal(s[name], t) for s in states[1:]):
                raise InputError(what, name, "is an integer tensor that differs between the runs",
                                 "Soup fine-tunes of one base model")
            out[name] = t
            continue
        acc = sum(w * s[name].float() for w, s in zip(weights, states))  # float32 accumulation
        out[name] = acc.to(t.dtype).contiguous()
    return out


def normalized_weights(weights: list[float] | None, n: int) -> list[float]:
    """Equal weights by default; else one non-negative weight per run, scaled to sum 1."""
    if weights is None:
        return [1 / n] * n
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise InputError("--weights", weights, f"needs {n} non-negative numbers, not all 0 (one per run)",
                         f"e.g. --weights {' '.join(['1'] * n)} for the plain mean")
    return [w / sum(weights) for w in weights]


def _run_config(run: Path) -> dict:
    record = run / "training.json"
    if not (run / "pipeline" / "model_index.json").is_file() or not record.is_file():
        raise InputError("runs", str(run), "is not a finished full fine-tune run (no pipeline/ and training.json)",
                         RUN_FIX)
    config = json.loads(record.read_text()).get("config") or {}
    if config.get("lora"):
        raise InputError("runs", str(run), "is a LoRA run; a soup averages full fine-tunes' weights", RUN_FIX)
    return config


def _differ(configs: list[dict]) -> list[str]:
    """Dotted names of the settings on which the configs disagree, the training seed left out."""
    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", json.dumps(v))]

    flats = [dict(flat(c)) for c in configs]
    keys = sorted(set().union(*flats) - {"train.seed"})
    return [k for k in keys if len({f.get(k) for f in flats}) > 1]


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*"))
    return names == sorted(p.name for p in b.glob("*")) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def _check_same(runs: list[Path], configs: list[dict]) -> None:
    """Runs must share the base model, the subjects' identifiers and the tokenizer: a soup mixes their weights only."""
    def said(c: dict, key: str):
        return [s.get("identifier") for s in c.get(key) or []] if key == "subjects" else c.get(key)

    for key, fix in (("model", "the same --model"), ("subjects", "the same subjects")):
        for run, c in zip(runs[1:], configs[1:]):
            if said(c, key) != said(configs[0], key):
                raise InputError("runs", str(run), f"was trained with {key} {said(c, key)!r}, {runs[0]} with "
                                 f"{said(configs[0], key)!r}", f"Soup runs trained with {fix}")
    tok = runs[0] / "pipeline" / "tokenizer"
    for run in runs[1:]:
        if not _same_files(tok, run / "pipeline" / "tokenizer"):
            raise InputError("runs", str(run), "has another tokenizer than the first run (other added tokens)",
                             "Soup runs trained with the same identifiers on the same base model")


def soup_runs(runs: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """Writes the weighted mean of finished full fine-tune runs as the run folder `out` (pipeline/, training.json
    with the first run's config and a "soup" record); returns `out`. Every weight file of the first run's pipeline
    (UNet, text encoders, VAE) is averaged; everything else (configs, tokenizer, scheduler) is the first run's."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise InputError("runs", [str(r) for r in runs], "a soup needs at least two runs", RUN_FIX)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("--out", str(out), "exists and is not an empty folder", "Pass a new folder")
    configs = [_run_config(r) for r in runs]
    _check_same(runs, configs)
    w = normalized_weights(weights, len(runs))
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(runs[0] / "pipeline", tmp / "pipeline")
    from safetensors.torch import load_file, save_file

    for file in sorted((tmp / "pipeline").rglob(f"*{WEIGHT_SUFFIX}")):
        rel = file.relative_to(tmp)
        missing = [str(r) for r in runs if not (r / rel).is_file()]
        if missing:
            raise InputError("runs", missing[0], f"has no {rel}", "Soup runs of one model family")
        state = soup_state_dicts([load_file(str(r / rel)) for r in runs], w, what=str(rel))
        save_file(state, str(file), metadata={"format": "pt"})
    soup = SoupConfig([str(r) for r in runs], w, [c.get("train", {}).get("seed") for c in configs], _differ(configs))
    atomic_write_json({"config": configs[0], "soup": asdict(soup)}, tmp / "training.json")
    if out.exists():
        out.rmdir()
    tmp.replace(out)
    return out
