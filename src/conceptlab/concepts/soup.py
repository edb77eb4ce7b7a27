"""Weight soups: the weighted mean of several fine-tunes of one base model (Wortsman et al., ICML 2022, "Model soups").

Full fine-tunes of one base model trained with different seeds (or settings) land near each other in weight space,
and their mean often generates better than any one of them: each run's own errors partly cancel. A soup is written
as a run folder of its own (pipeline/ or lora/, and training.json), so `generate`, `edit` and `evaluate dreambooth`
take it like any finished run.

LoRA runs are souped by their products, not their factors: the mean of B_i A_i is [w_1 B_1 ... w_n B_n] times
[A_1; ...; A_n] stacked, a LoRA of the summed rank (peft's add_weighted_adapter "cat"). Averaging the factors
themselves would give mean(B) mean(A), which is not the mean of the runs' weight changes.
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
RUN_FIX = "Pass the --out folders of finished `conceptlab train dreambooth` runs (all full fine-tunes or all --lora)"
LORA_FILES = ("pytorch_lora_weights.safetensors", "lora.kohya.safetensors")  # concepts.lora's two formats
# a LoRA layer's down (A) factor, by key format: peft, diffusers, diffusers' text encoder, kohya; the up (B) factor
# is the same key with "down"/"A" turned into "up"/"B", and kohya's alpha is the layer's name + ".alpha"
DOWN_SUFFIXES = {".lora_A.weight": ".lora_B.weight", ".lora.down.weight": ".lora.up.weight",
                 ".lora_linear_layer.down.weight": ".lora_linear_layer.up.weight",
                 ".lora_down.weight": ".lora_up.weight"}


@dataclass
class SoupConfig:
    """What a soup was made of; saved in its training.json under "soup"."""

    runs: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # normalized to sum 1
    seeds: list[int | None] = field(default_factory=list)  # each run's training seed, as its training.json says
    differ: list[str] = field(default_factory=list)  # settings the runs' configs disagree on, besides the seed


def _check_same_keys(states: list[dict], what: str, why: str, fix: str) -> None:
    """InputError naming up to three keys in which a run's state differs from run 1's."""
    for k, state in enumerate(states[1:], 1):
        if state.keys() != states[0].keys():
            raise InputError(what, sorted(state.keys() ^ states[0].keys())[:3], f"run {k + 1} {why}", fix)


def soup_state_dicts(states: list[dict[str, torch.Tensor]], weights: list[float],
                     what: str = "runs") -> dict[str, torch.Tensor]:
    """sum_i w_i * state_i, accumulated in float32 and cast back to each tensor's dtype; integer tensors (buffers such
    as position ids) must agree. InputError naming the first key or shape that differs."""
    first = states[0]
    _check_same_keys(states, what, "holds other weights than run 1 (another model family?)",
                     "Soup fine-tunes of one base model")
    for k, state in enumerate(states[1:], 1):
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
    config = json.loads(record.read_text()).get("config") or {} if record.is_file() else None
    where = "lora" if config and config.get("lora") else "pipeline"
    finished = (run / "lora" / LORA_FILES[0]).is_file() if where == "lora" else \
        (run / "pipeline" / "model_index.json").is_file()
    if config is None or not finished:
        raise InputError("runs", str(run), f"is not a finished run (no {where}/ and training.json)", RUN_FIX)
    if (run / "bundle.safetensors").is_file():
        raise InputError("runs", str(run), "is a pivotal-tuning LoRA run: its tokens would need a soup of their own",
                         "Soup DreamBooth LoRA runs, or pivotal runs trained with --full-fine-tune")
    return config


def soupable(run: Path) -> bool:
    """Whether `run` is a finished run folder a soup takes (what soup_runs checks first)."""
    try:
        _run_config(Path(run))
    except InputError:
        return False
    return True


def soup_lora_states(states: list[dict[str, torch.Tensor]], weights: list[float],
                     what: str = "runs") -> dict[str, torch.Tensor]:
    """The LoRA whose weight change is sum_i w_i * (run i's): each layer's down factors stacked along the rank, its
    up factors side by side, each scaled by w_i and by its run's alpha / rank (kohya files); alpha becomes the
    summed rank, so that scale is 1. Keys that are not a LoRA factor must agree."""
    first = states[0]
    _check_same_keys(states, what, "has LoRA layers run 1 has not (or the reverse)",
                     "Soup LoRA runs that adapt the same layers (the same --train-text-encoder, one family)")
    out, done = {}, set()
    for key in first:
        suffix = next((x for x in DOWN_SUFFIXES if key.endswith(x)), None)
        if suffix is None:
            continue
        layer = key[: -len(suffix)]
        up_key, alpha_key = layer + DOWN_SUFFIXES[suffix], layer + ".alpha"
        if up_key not in first:
            raise InputError(what, key, "has no up factor beside it", "Soup LoRA files written by conceptlab or kohya")
        ups = []
        for w, state in zip(weights, states):
            rank = state[key].shape[0]
            scale = float(state[alpha_key]) / rank if alpha_key in state else 1.0
            ups.append(w * scale * state[up_key].float())
        out[key] = torch.cat([s[key] for s in states], dim=0).contiguous()  # (sum r, in, ...)
        out[up_key] = torch.cat(ups, dim=1).to(first[up_key].dtype).contiguous()  # (out, sum r, ...)
        if alpha_key in first:
            out[alpha_key] = torch.tensor(float(out[key].shape[0]), dtype=first[alpha_key].dtype)
        done |= {key, up_key, alpha_key}
    for key in first.keys() - done:
        if any(not torch.equal(s[key], first[key]) for s in states[1:]):
            raise InputError(what, key, "is not a LoRA factor and differs between the runs",
                             "Soup plain LoRA runs (not DoRA or other adapter kinds)")
        out[key] = first[key]
    return out


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
    if len({bool(c.get("lora")) for c in configs}) > 1:
        modes = ", ".join(f"{r}: {'LoRA' if c.get('lora') else 'full fine-tune'}" for r, c in zip(runs, configs))
        raise InputError("runs", modes, "mixes LoRA runs and full fine-tunes", "Soup runs of one kind")
    if configs[0].get("lora"):
        return
    tok = runs[0] / "pipeline" / "tokenizer"
    for run in runs[1:]:
        if not _same_files(tok, run / "pipeline" / "tokenizer"):
            raise InputError("runs", str(run), "has another tokenizer than the first run (other added tokens)",
                             "Soup runs trained with the same identifiers on the same base model")


def _soup_loras(runs: list[Path], weights: list[float], folder: Path, soup: SoupConfig) -> None:
    """Writes lora/ with both of concepts.lora's files, each the soup of the runs' files of that format; their
    metadata is the first run's, with the summed rank and the soup."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from conceptlab.io import atomic_write_bytes

    folder.mkdir(parents=True)
    for name in LORA_FILES:
        files = [r / "lora" / name for r in runs]
        if missing := [str(f) for f in files if not f.is_file()]:
            raise InputError("runs", missing[0], "is missing", "Soup finished LoRA runs (both files are written)")
        state = soup_lora_states([load_file(str(f)) for f in files], weights, what=f"lora/{name}")
        with safe_open(str(files[0]), framework="pt") as f:
            meta = dict(f.metadata() or {})
        rank = max(v.shape[0] for k, v in state.items() if k.endswith(tuple(DOWN_SUFFIXES)))
        mine = {**json.loads(meta.get("conceptlab", "{}")), "rank": rank, "soup": asdict(soup)}
        meta = {**meta, "conceptlab": json.dumps(mine)} | ({"ss_network_dim": str(rank)} if "ss_network_dim" in meta else {})
        atomic_write_bytes(save(state, metadata=meta), folder / name)


def _soup_pipelines(runs: list[Path], weights: list[float], folder: Path) -> None:
    """pipeline/: the first run's, with every weight file the weighted mean of the runs' own."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(runs[0] / "pipeline", folder)
    for file in sorted(folder.rglob(f"*{WEIGHT_SUFFIX}")):
        rel = file.relative_to(folder.parent)
        missing = [str(r) for r in runs if not (r / rel).is_file()]
        if missing:
            raise InputError("runs", missing[0], f"has no {rel}", "Soup runs of one model family")
        state = soup_state_dicts([load_file(str(r / rel)) for r in runs], weights, what=str(rel))
        save_file(state, str(file), metadata={"format": "pt"})


def soup_runs(runs: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """Writes the weighted mean of finished runs as the run folder `out` (training.json with the first run's config
    and a "soup" record; pipeline/ for full fine-tunes, lora/ for LoRA runs); returns `out`. Full fine-tunes: every
    weight file of the first run's pipeline (UNet, text encoders, VAE) is averaged, everything else (configs,
    tokenizer, scheduler) is the first run's. LoRA runs: both LoRA files are souped by their products."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise InputError("runs", [str(r) for r in runs], "a soup needs at least two runs", RUN_FIX)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("--out", str(out), "exists and is not an empty folder", "Pass a new folder")
    configs = [_run_config(r) for r in runs]
    _check_same(runs, configs)
    w = normalized_weights(weights, len(runs))
    soup = SoupConfig([str(r) for r in runs], w, [c.get("train", {}).get("seed") for c in configs], _differ(configs))
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if configs[0].get("lora"):
            _soup_loras(runs, w, tmp / "lora", soup)
        else:
            _soup_pipelines(runs, w, tmp / "pipeline")
        atomic_write_json({"config": configs[0], "soup": asdict(soup)}, tmp / "training.json")
    except BaseException:  # a refused or interrupted soup leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.replace(out)
    return out
