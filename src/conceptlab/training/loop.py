"""The one training loop. A method says what it trains and what its loss is; the loop does the rest.

accelerate (processes, mixed precision), gradient accumulation, lr schedule with warm-up (and a floor), a
progress bar with the loss, a NaN/inf guard, verified atomic checkpoints, exact resume of the same run only,
Ctrl-C and SIGTERM that stop after a whole step and save it, preview grids.

Four small extension points serve methods that need more: after-step hooks (an EMA, a log row, an
evaluation; a hook with state_dict() is checkpointed), extra random streams the method draws from (saved and
rewound with the loop's own generator), `stop_when` (early stopping) and `train(stop_at=k)` (a pause).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from conceptlab.errors import ConceptlabError, InputError
from conceptlab.io import atomic_save_torch, atomic_write_json, atomic_write_text, load_torch_checkpoint

LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")
OPTIMIZERS = ("adamw", "adafactor", "adamw8bit")
MANIFEST = "manifest.json"
STEP_FOLDER = re.compile(r"step-(\d+)")  # exactly: a "step-000040.tmp" is a write that never finished
# fingerprint keys a resumed run may change: how far it trains, how often it saves and previews, and a
# memory-for-time trade that leaves the arithmetic alone
RESUMABLE = ("train.steps", "train.checkpoint_every", "train.keep_checkpoints", "train.preview_every",
             "train.preview_prompts", "train.preview_steps", "train.preview_seed", "train.gradient_checkpointing",
             "train.report_to")
# fingerprint keys added since fingerprints began, with the value every run made before them had
ADDED = {"train.min_lr_ratio": 0.0, "train.fused_adamw": True, "train.optimizer": "adamw"}
# method-config keys added since, with the value every run made before them had; filled into an older
# fingerprint only where this run's has the key (a textual-inversion run has no text_encoder_lr)
METHOD_ADDED = {"ema_decay": 0.0, "text_encoder_lr": None, "caption_dropout": 0.0, "token_init": "class",
                "class_steps": 30}
STOPS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
# --mixed-precision -> the autocast dtype (None: no autocast)
AUTOCAST = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# --report-to -> the package accelerate's tracker needs (none: metrics.jsonl only, which is always written)
TRACKERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}


@dataclass
class TrainConfig:
    """Settings every training method shares (defaults follow diffusers' example scripts unless noted)."""

    steps: int = 500
    batch_size: int = 4
    gradient_accumulation: int = 1
    lr: float = 5e-4
    scale_lr: bool = False  # lr *= batch_size * gradient_accumulation * processes
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine decays to lr * this, not to 0 (transformers' min_lr_rate; the base UNet: 0.1)
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    # "adamw", or "adafactor": Adafactor (Shazeer & Stern 2018), whose second moment is factored into a row and
    # a column vector, so its state is a fraction of AdamW's two full copies (about 21 GB less for a full SDXL
    # UNet); transformers' implementation at this lr, as kohya's scripts run it
    optimizer: str = "adamw"
    # torch's fused AdamW kernel (make_optimizer); False: its default per-tensor AdamW, which the base model, the
    # judge and the classifier were always trained with, so that they reproduce bit for bit
    fused_adamw: bool = True
    # "no", "fp16" or "bf16": the forward and backward under autocast to that dtype (fp16 with a GradScaler), as
    # diffusers' --mixed_precision; whatever it is, trainable weights and the optimizer state stay float32
    mixed_precision: str = "no"
    report_to: str = "none"  # "tensorboard" or "wandb": accelerate's tracker logs step, loss, lr and scores too
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end (and on Ctrl-C)
    keep_checkpoints: int = 2
    preview_every: int = 0  # 0: no previews
    preview_prompts: list[str] = field(default_factory=list)
    preview_steps: int = 20
    preview_seed: int = 0

    def check(self) -> None:
        """Raises InputError for a setting that cannot train (the shared bounds of conceptlab.validation)."""
        from conceptlab.validation import BATCH, COUNT0, LR, NONNEG, SAMPLING_STEPS, SEED, TRAIN_STEPS, Bound

        checks = (("steps", TRAIN_STEPS), ("batch_size", BATCH), ("gradient_accumulation", BATCH), ("lr", LR),
                  ("warmup_steps", COUNT0), ("min_lr_ratio", Bound(0, 1)), ("weight_decay", NONNEG),
                  ("max_grad_norm", NONNEG), ("seed", SEED),
                  ("checkpoint_every", COUNT0), ("keep_checkpoints", Bound(0, 10_000, integer=True)),
                  ("preview_every", COUNT0), ("preview_steps", SAMPLING_STEPS), ("preview_seed", SEED))
        for name, bound in checks:
            bound.check(f"--{name.replace('_', '-')}", getattr(self, name))
        for prompt in self.preview_prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise InputError("--validation-prompt", prompt, "is empty", "Give a prompt, e.g. 'a sticker of a <x>'")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError("--lr-schedule", self.lr_schedule, "unknown schedule", f"Use one of {LR_SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError("--optimizer", self.optimizer, "unknown optimizer", f"Use one of {OPTIMIZERS}")
        if self.optimizer == "adamw8bit":
            _require_bitsandbytes()
        if self.mixed_precision not in AUTOCAST:
            raise InputError("--mixed-precision", self.mixed_precision, "unsupported", f"Use one of {tuple(AUTOCAST)}")
        _check_tracker(self.report_to)
        if self.mixed_precision == "bf16":
            from conceptlab.hardware import warn_if_slow_bf16

            warn_if_slow_bf16("--mixed-precision=bf16")


def _check_tracker(report_to: str) -> None:
    """--report-to names a known tracker whose package is installed."""
    import importlib.util

    if report_to not in TRACKERS:
        raise InputError("--report-to", report_to, "unknown tracker", f"Use one of {tuple(TRACKERS)}")
    package = TRACKERS[report_to]
    try:
        missing = package is not None and importlib.util.find_spec(package) is None
    except ValueError:  # a module set to None in sys.modules: not importable either
        missing = True
    if missing:
        raise InputError("--report-to", report_to, f"needs the {package} package, which is not installed",
                         f"pip install {package}, or drop --report-to (metrics.jsonl is written anyway)")


class TrainingMethod(Protocol):
    """What a method gives the loop."""

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor: ...

    def trainable_state(self) -> dict[str, torch.Tensor]: ...

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def save_outputs(self, out: Path, step: int, loss: float | None) -> None: ...

    def preview(self, prompts: list[str], seed: int, steps: int) -> list: ...


class TrainingDiverged(ConceptlabError):
    """The loss or the trainable weights became NaN or infinite."""


class _Rewound(KeyboardInterrupt):
    """A KeyboardInterrupt that came before a step changed anything; the generator is back where the step began."""


class _Damaged(Exception):
    """A checkpoint that cannot be loaded; the message says why."""


@dataclass
class TrainResult:
    steps: int
    losses: list[float]
    stopped: str  # "done" (also stop_when), "paused" (stop_at), "interrupted" (SIGINT, Ctrl-C), "terminated" (SIGTERM)
    seconds: float


class TrainingStopped(KeyboardInterrupt):
    """Raised by a training function that returns a finished model when its run stopped before the end, saved
    (SIGINT/SIGTERM, or a pause at stop_at); `result` says how."""

    def __init__(self, result: TrainResult):
        super().__init__(f"{result.stopped} at step {result.steps}")
        self.result = result


def _lr_factors(cfg: TrainConfig):
    """step -> (warm-up, decay) factors of the learning rate."""
    def f(step: int) -> tuple[float, float]:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule in ("constant", "constant_with_warmup"):
            return warm, 1.0
        if cfg.lr_schedule == "linear":
            return warm, 1 - min(1.0, step / max(1, cfg.steps))
        # pi * step / steps, in that order, as the base-model stages and the judge computed it
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / max(1, cfg.steps)))
        return warm, cosine * (1 - cfg.min_lr_ratio) + cfg.min_lr_ratio

    return f


class _Schedule(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR whose lambda gives (warm-up, decay); lr = base * warm-up * decay, multiplied in that order, as the
    base-model stages and the judge always did (multiplying the two factors first can differ in the last bit)."""

    def get_lr(self) -> list[float]:
        factors = [f(self.last_epoch) for f in self.lr_lambdas]
        return [base * warm * decay for base, (warm, decay) in zip(self.base_lrs, factors)]


# ---------------------------------------------------------------- random streams
def _stream_state(stream):
    """The state of a torch.Generator, a numpy Generator or a random.Random."""
    if isinstance(stream, torch.Generator):
        return stream.get_state()
    if isinstance(stream, random.Random):
        return stream.getstate()
    return stream.bit_generator.state


def _set_stream_state(stream, state) -> None:
    if isinstance(stream, torch.Generator):
        stream.set_state(state)
    elif isinstance(stream, random.Random):
        stream.setstate(state)
    else:
        stream.bit_generator.state = state


def _check_stream(name: str, stream) -> None:
    if not isinstance(stream, (torch.Generator, random.Random, np.random.Generator)):
        raise TypeError(f"stream {name!r} is a {type(stream).__name__}; the loop saves torch.Generator, "
                        "numpy.random.Generator and random.Random")


class EMA:
    """After-step hook: an exponential moving average of `params`, with diffusers' EMAModel warm-up
    (decay = min(decay, (1 + step) / (10 + step))); checkpointed with the run."""

    def __init__(self, params, decay: float):
        self.params, self.decay = list(params), decay
        self.shadow = [p.detach().clone() for p in self.params]
        self._placed = False  # the loop may cast (float32) and place the weights after this shadow was made

    def _follow(self) -> None:
        """Once: the shadow takes its weights' current dtype and device."""
        if not self._placed:
            self.shadow = [s.to(p.device, p.dtype) for s, p in zip(self.shadow, self.params)]
            self._placed = True

    @torch.no_grad()
    def __call__(self, trainer: Trainer) -> None:
        self._follow()
        decay = min(self.decay, (1 + trainer.step) / (10 + trainer.step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self._follow()  # a resume loads after the loop placed the weights: the saved values keep their precision
        for s, v in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(v)


def every(n: int, fn: Callable) -> Callable:
    """An after-step hook that calls fn(trainer) every n steps."""
    return lambda trainer: fn(trainer) if trainer.step % n == 0 else None


# ---------------------------------------------------------------- run fingerprints
def _flatten(value, prefix: str = "") -> dict:
    """{'train': {'lr': 1}, 'c': [{'t': 'x'}]} -> {'train.lr': 1, 'c.0.t': 'x'}; empty containers stay values."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = enumerate(value)
    else:
        return {prefix: value}
    out = {}
    for key, item in items:
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def run_fingerprint(record: dict, cfg: TrainConfig, processes: int) -> dict:
    """What a run trains, as flat 'a.b' keys: the config record and TrainConfig, less what may change on resume."""
    # through JSON, so that the fingerprint compares equal to the one read back from loop.json
    full = json.loads(json.dumps({**record, "train": asdict(cfg), "processes": processes}, default=str))
    return {k: v for k, v in _flatten(full).items() if not any(k == r or k.startswith(r + ".") for r in RESUMABLE)}


def _added_since(fingerprint: dict) -> dict:
    """The keys added to fingerprints since they began, at the value older runs had, for those `fingerprint` has."""
    return {**ADDED, **{k: v for k, v in METHOD_ADDED.items() if k in fingerprint}}


def _differences(old: dict, new: dict) -> list[str]:
    unset = object()
    return sorted(k for k in old.keys() | new.keys() if old.get(k, unset) != new.get(k, unset))


def _show(fingerprint: dict, keys: list[str], most: int = 8) -> str:
    """'lr=0.005, seed=0' (TrainConfig fields by their own name)."""
    shown = [f"{k.removeprefix('train.')}={fingerprint.get(k, '(unset)')}" for k in keys[:most]]
    return ", ".join(shown) + (f" and {len(keys) - most} more" if len(keys) > most else "")


# ---------------------------------------------------------------- checkpoint folders
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path) -> None:
    """Lists every file in `folder` with its size and sha256; written last, so a manifest means all is there."""
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(folder.iterdir()) if p.is_file()}
    atomic_write_json({"files": files}, folder / MANIFEST)


def _required(rank: int) -> tuple[str, ...]:  # a hooks.pt is checked through the manifest, as every file is
    return "trainable.pt", "optimizer.pt", "loop.json", f"rng-{rank}.pt"


def _file_damage(path: Path, meta: dict | None, hashes: bool) -> str | None:
    if meta is None:
        return f"not in {MANIFEST}"
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != meta["size"]:
        return f"size {size} != {meta['size']}"
    if hashes and _sha256(path) != meta["sha256"]:
        return "sha256 differs from the manifest's"
    return None


def _legacy_damage(folder: Path, rank: int) -> str | None:
    """Without a manifest a checkpoint is usable only if it predates them: its loop.json has no fingerprint."""
    try:
        loop = json.loads((folder / "loop.json").read_text())
    except (OSError, ValueError):
        loop = None
    if not isinstance(loop, dict) or "fingerprint" in loop:
        return f"{MANIFEST}: missing"
    missing = [name for name in _required(rank) if not (folder / name).is_file()]
    return f"{missing[0]}: missing" if missing else None


def _damage(folder: Path, rank: int = 0, hashes: bool = False) -> str | None:
    """Why checkpoint `folder` cannot be trusted ('trainable.pt: size 123 != 4567'); None when it is intact."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return _legacy_damage(folder, rank)
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST}: unreadable"
    try:
        for name in sorted(set(files) | set(_required(rank))):
            why = _file_damage(folder / name, files.get(name), hashes)
            if why:
                return f"{name}: {why}"
    except (KeyError, TypeError, AttributeError):
        return f"{MANIFEST}: malformed"
    return None


def _step_folders(out: Path) -> list[tuple[int, Path]]:
    """`out`'s checkpoint folders by step number, oldest first; only names step-N count (never a .tmp)."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_FOLDER.fullmatch(p.name))]
    return sorted(found)


def _checkpoints(out: Path, rank: int = 0, hashes: bool = False) -> list[Path]:
    """The intact checkpoints in `out`, oldest first (sizes checked; contents too with `hashes`)."""
    return [p for _, p in _step_folders(out) if _damage(p, rank, hashes) is None]


def _non_finite(tensors) -> bool:
    return any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors)


def _notice(text: str) -> None:
    """Writes straight to stderr: safe inside a signal handler, where print() could re-enter a buffered write."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _require_bitsandbytes() -> None:
    """--optimizer adamw8bit: an InputError saying how to get bitsandbytes unless it is installed (looked up, not
    imported: TrainConfig.check runs before every studio job)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("bitsandbytes") is not None
    except ValueError:  # a module set to None (as tests do to hide it)
        found = False
    if not found:
        raise InputError("--optimizer", "adamw8bit", "needs the bitsandbytes package, which is not installed",
                         "pip install bitsandbytes (or: pip install 'conceptlab[8bit]'), or use adamw or adafactor")


def make_optimizer(params, lr: float, weight_decay: float, fused: bool = True,
                   kind: str = "adamw") -> torch.optim.Optimizer:
    """AdamW, with torch's fused kernel for floating-point tensors on CPU or CUDA: the same update, and on CPU
    2.3x faster than the per-tensor loop torch picks by default (102M parameters: 0.08 s against 0.18 s).
    fused=False gives torch's default, whose results differ from the fused kernel's in the last bits.
    kind="adamw8bit": bitsandbytes' AdamW8bit (diffusers' --use_8bit_adam, kohya's AdamW8bit), both moments kept
    in 8 bits per weight with a scale per block of 256 (tensors under 4096 weights keep 32-bit moments): a
    quarter of AdamW's state, about 15 GB less for a full SDXL UNet's 2.6 billion weights.
    kind="adafactor": transformers' Adafactor (factored second moment, no first moment) stepping at `lr` itself,
    not at a step relative to each weight's size (scale_parameter and relative_step off, as kohya's scripts set
    it): a relative step would leave a LoRA's zero-initialised B matrix all but still."""
    params = list(params)  # tensors, or torch param groups ({"params": [...], "lr": ...})
    if kind == "adamw8bit":  # Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"
        _require_bitsandbytes()
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    if kind == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False, relative_step=False,
                         warmup_init=False)
    tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
    fused = fused and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


class Trainer:
    """Runs a TrainingMethod with TrainConfig, writing checkpoints and outputs into `out`.

    `hooks` run after every step, as hook(trainer); `streams` ({name: torch/numpy/python generator}) are the random
    streams the method draws from besides the loop's generator; `stop_when(trainer)` ends the run early, as done.
    """

    def __init__(self, method: TrainingMethod, cfg: TrainConfig, out: str | Path, config_record: dict | None = None,
                 *, hooks: Sequence[Callable] = (), streams: dict | None = None, stop_when: Callable | None = None,
                 desc: str = "train", progress: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        cfg.check()
        self.method, self.cfg, self.out = method, cfg, Path(out)
        # autocast and the GradScaler are the loop's own (_autocast, _setup_precision): accelerate's state keeps
        # the first precision a process asks for, and a process may train several methods one after another
        tracker = None if cfg.report_to == "none" else cfg.report_to
        self.acc = Accelerator(cpu=not torch.cuda.is_available(), log_with=tracker,
                               project_config=ProjectConfiguration(project_dir=str(self.out),
                                                                   logging_dir=str(self.out / "logs")))
        self.record = config_record or {}
        self.params = [p for p in method.parameters() if p.requires_grad]
        self._setup_precision()
        scale = cfg.batch_size * cfg.gradient_accumulation * self.acc.num_processes if cfg.scale_lr else 1
        # a method may train some tensors at their own rate: param_groups() -> [(params, factor of the lr)]
        groups = method.param_groups() if hasattr(method, "param_groups") else [(self.params, 1.0)]
        self.opt = make_optimizer([{"params": list(ps), "lr": cfg.lr * scale * f} for ps, f in groups],
                                  cfg.lr * scale, cfg.weight_decay, cfg.fused_adamw, cfg.optimizer)
        self.sched = _Schedule(self.opt, _lr_factors(cfg))
        # each process draws its own batches; the generator's state is part of every checkpoint
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.acc.process_index)
        self.hooks, self.streams, self.stop_when = list(hooks), dict(streams or {}), stop_when
        for name, stream in self.streams.items():
            _check_stream(name, stream)
        self.desc, self.progress = desc, progress
        self.step, self.losses, self.last_lr = 0, [], None  # last_lr: the rate the last step used
        self.group_lrs: list[float] | None = None  # each group's, when they differ (--token-lr, --text-encoder-lr)
        self.fingerprint = run_fingerprint(self.record, cfg, self.acc.num_processes)
        self._stop: str | None = None  # set by a signal: "interrupted" or "terminated"
        self._on_disk: int | None = None  # the step whose state is known to be in checkpoints/ already

    def _setup_precision(self) -> None:
        """Trainable weights in float32 (diffusers' cast_training_params), whatever the frozen model's dtype; the
        autocast dtype; for fp16 a GradScaler (accelerate's on an accelerator, torch's CPU one on the CPU)."""
        low = {p.dtype for p in self.params if p.is_floating_point() and p.dtype != torch.float32}
        for p in self.params:  # the same Parameter objects: the method's modules and state dicts see the change
            if p.dtype in low:
                p.data = p.data.float()
        self.autocast_dtype = AUTOCAST[self.cfg.mixed_precision]
        # previews and hooks render with the pipeline, whose fine-tuned parts are now float32 beside frozen float16
        # ones (a full fine-tune): they run under autocast to the model's dtype; otherwise as they always did
        self.render_dtype = next(iter(sorted(low, key=str)), None)
        self.scaler = None
        if self.cfg.mixed_precision != "fp16":
            return
        if self.acc.device.type == "cpu":
            self._warn("--mixed-precision fp16 on the CPU: accelerate gives no fp16 autocast there, so the loop uses "
                       "torch's CPU autocast to float16 and torch's CPU GradScaler; most CPUs compute float16 slower "
                       "than float32 (use --mixed-precision no, or bf16 on a CPU with native bf16)")
            self.scaler = torch.amp.GradScaler("cpu")
        else:
            from accelerate.utils import get_grad_scaler

            self.scaler = get_grad_scaler(self.acc.distributed_type)

    def _autocast(self, dtype: torch.dtype | None = None):
        dtype = dtype or self.autocast_dtype
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.acc.device.type, dtype=dtype)

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Saves the state after step self.step as checkpoints/step-N: into a .tmp folder, manifest last, renamed."""
        final = self.out / "checkpoints" / f"step-{self.step:06d}"
        if self._on_disk == self.step:  # resumed from or saved at this very step: rewriting would only add risk
            return final
        self._refuse_non_finite(self.params)  # on every process, so that all stop together
        tmp = final.with_name(final.name + ".tmp")
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            state = {k: v.detach().cpu() for k, v in self.method.trainable_state().items()}
            self._refuse_non_finite(state.values())
            atomic_save_torch(state, tmp / "trainable.pt")
            state = {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            atomic_save_torch(state, tmp / "optimizer.pt")
            if hook_states := self._hook_states():
                atomic_save_torch(hook_states, tmp / "hooks.pt")
        self.acc.wait_for_everyone()
        atomic_save_torch(self._rng_state(), tmp / f"rng-{self.acc.process_index}.pt")
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            atomic_write_json({"step": self.step, "steps": self.cfg.steps, "losses": self.losses,
                               "config": self.record, "fingerprint": self.fingerprint}, tmp / "loop.json")
            _write_manifest(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._prune()
        self.acc.wait_for_everyone()
        self._on_disk = self.step
        return final

    def _rng_state(self) -> dict:
        """The loop's generator and the method's streams, as saved in rng-N.pt."""
        return {"generator": self.gen.get_state(), "streams": {k: _stream_state(s) for k, s in self.streams.items()}}

    def _set_rng_state(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        for name, stream in self.streams.items():
            _set_stream_state(stream, state["streams"][name])

    def _stateful_hooks(self) -> dict:
        return {str(i): h for i, h in enumerate(self.hooks) if hasattr(h, "state_dict")}

    def _hook_states(self) -> dict:
        return {k: h.state_dict() for k, h in self._stateful_hooks().items()}

    def _refuse_non_finite(self, tensors) -> None:
        """A checkpoint of NaN/inf weights could only diverge again on resume, and would push out good ones."""
        if _non_finite(tensors):
            raise TrainingDiverged(
                f"the trainable weights became NaN or infinite at step {self.step}; they were not saved. "
                f"The last good checkpoint is kept in {self.out / 'checkpoints'}; try a lower --lr")

    def _prune(self) -> None:
        """Keeps the newest keep_checkpoints intact checkpoints up to this step, by step number; removes the rest."""
        if self.cfg.keep_checkpoints < 1:  # 0 keeps them all
            return
        folders = _step_folders(self.out)
        # a folder past this step is a damaged one resume fell back from: nothing can continue from it
        keep = [p for s, p in folders if s <= self.step and _damage(p) is None][-self.cfg.keep_checkpoints:]
        for _, p in folders:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def resume(self) -> bool:
        """Loads the newest intact checkpoint in `out`, warning about damaged newer ones; False when there is none."""
        damaged = []
        for _, ck in reversed(_step_folders(self.out)):
            why = _damage(ck, self.acc.process_index, hashes=True)
            if why is None:
                try:
                    self._say_resumed(ck, self._load(ck), damaged)
                    return True
                except _Damaged as e:
                    why = str(e)
            damaged.append((ck, why))
        if damaged:
            listing = "; ".join(f"{ck.name}: {why}" for ck, why in damaged)
            raise InputError("--resume", str(self.out / "checkpoints"), f"holds no intact checkpoint ({listing})",
                             "Start a new run with --overwrite, or choose another --out")
        return False

    def _load(self, ck: Path) -> dict:
        """Restores the state saved in `ck` and returns its loop.json; _Damaged if any of it cannot be read."""
        try:
            loop = json.loads((ck / "loop.json").read_text())
            step, losses = int(loop["step"]), [float(x) for x in loop["losses"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _Damaged(f"loop.json: {type(e).__name__}: {e}") from e
        self._check_same_run(ck, loop, step)
        try:  # every file is read before any state changes; a failure to apply it is damage too
            trainable = load_torch_checkpoint(ck / "trainable.pt")
            state = load_torch_checkpoint(ck / "optimizer.pt")
            rng = load_torch_checkpoint(ck / f"rng-{self.acc.process_index}.pt")
            hooks = self._stateful_hooks()
            # a run may gain a stateful hook on resume (e.g. --select-by added): it starts fresh, said below
            hook_states = load_torch_checkpoint(ck / "hooks.pt") if hooks and (ck / "hooks.pt").is_file() else {}
            self.method.load_trainable_state(trainable)
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            self._set_rng_state(rng)
            fresh = [k for k in hooks if k not in hook_states]
            for key, hook in hooks.items():
                if key in hook_states:
                    hook.load_state_dict(hook_states[key])
        except Exception as e:  # noqa: BLE001 - whatever torch.load raises, the older checkpoint is tried next
            first = (str(e).strip().splitlines() or [""])[0][:160]  # torch's messages run to paragraphs
            raise _Damaged(f"cannot be loaded ({type(e).__name__}: {first})") from e
        for key in fresh:
            self._warn(f"{type(hooks[key]).__name__} was not in checkpoint {ck.name} (the run gained it on resume): "
                       f"it starts fresh at step {step}")
        self.step, self.losses, self._on_disk = step, losses, step
        return loop

    def _check_same_run(self, ck: Path, loop: dict, step: int) -> None:
        """Refuses to continue a checkpoint made with other settings, or past the asked --steps."""
        old = loop.get("fingerprint")
        if old is None:
            self._warn(f"checkpoint {ck} predates run fingerprints: whether it was made with this run's settings "
                       "cannot be checked")
        elif keys := _differences(old := {**_added_since(self.fingerprint), **old}, self.fingerprint):
            raise InputError("--resume", str(ck), f"the checkpoint was made with {_show(old, keys)}; this run asks "
                             f"{_show(self.fingerprint, keys)}",
                             "Resume with the same settings, or start a new run with --overwrite")
        if step > self.cfg.steps:
            raise InputError("--steps", self.cfg.steps, f"is below step {step} of the checkpoint {ck}",
                             f"Pass --steps {step} or more to resume it")

    def _say_resumed(self, ck: Path, loop: dict, damaged: list) -> None:
        for bad, why in damaged:
            self._warn(f"checkpoint {bad.name} is damaged ({why}); falling back to {ck.name}")
        keys = [k for k in ("model", "train.lr", "train.batch_size", "train.gradient_accumulation", "train.seed")
                if self.fingerprint.get(k) is not None]
        line = f"resuming {ck} at step {self.step} ({_show(self.fingerprint, keys)}); training to step {self.cfg.steps}"
        if loop.get("steps") not in (None, self.cfg.steps):
            line += f" (--steps changed from {loop['steps']} to {self.cfg.steps})"
        if self.acc.is_main_process:
            print(line)

    def _warn(self, text: str) -> None:
        if self.acc.is_main_process:
            warnings.warn(text, stacklevel=3)

    # ---------------------------------------------------------------- signals
    @contextlib.contextmanager
    def _signals_caught(self):
        """While training, SIGINT and SIGTERM only ask the loop to stop after the current step."""
        self._stop = None
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            yield
            return
        previous = {s: signal.getsignal(s) for s in STOPS}
        for s in STOPS:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._stop:  # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        if not self._stop:
            self._stop = STOPS[signum]
            if self.acc.is_local_main_process:
                _notice(f"\n{self._stop}: stopping after this step to save it (Ctrl-C again stops at once)\n")

    def _stop_asked(self) -> str | None:
        """The stop a signal asked for; with several processes, agreed by all so that they save the same step."""
        if self.acc.num_processes == 1:
            return self._stop
        codes = ("", "interrupted", "terminated")
        mine = torch.tensor([codes.index(self._stop or "")], device=self.acc.device)
        return codes[int(self.acc.gather(mine).max())] or None

    def _stop_here(self, stopped: str) -> str:
        path = self.save_checkpoint()
        if self.acc.is_main_process:
            print(f"\n{stopped} at step {self.step}; checkpoint saved to {path}. Run again with --resume.")
        return stopped

    # ---------------------------------------------------------------- the loop
    def _gradients(self) -> float:
        """Accumulates this step's gradients; returns its loss."""
        cfg, total = self.cfg, 0.0
        for _ in range(cfg.gradient_accumulation):
            with self._autocast():
                loss = self.method.loss(cfg.batch_size, self.gen)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {self.step + 1}; training stopped without saving it. "
                    f"The last good checkpoint is kept in {self.out / 'checkpoints'}; try a lower --lr"
                )
            scaled = loss / cfg.gradient_accumulation
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += loss.item() / cfg.gradient_accumulation
        if self.acc.num_processes > 1:  # average gradients across processes
            for p in self.params:
                if p.grad is not None:
                    p.grad = self.acc.reduce(p.grad, reduction="mean")
            total = self.acc.reduce(torch.tensor(total), reduction="mean").item()
        return total

    def _one_step(self) -> None:
        """One optimizer step, then the hooks. A KeyboardInterrupt before the update rewinds the generator and the
        streams: the step never began."""
        start = self._rng_state()
        try:
            loss = self._gradients()
        except KeyboardInterrupt:
            if self._stop:  # the second Ctrl-C: stop at once
                raise
            self._set_rng_state(start)
            self.opt.zero_grad(set_to_none=True)
            raise _Rewound from None
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)  # clip the true gradients
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        rates = self.sched.get_last_lr()  # one per optimizer group
        self.last_lr = rates[0]
        self.group_lrs = rates if len(set(rates)) > 1 else None  # logged too where groups train at their own rates
        if self.scaler is not None:  # skips the update when fp16 gradients overflowed, and lowers the scale
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.losses.append(loss)
        with self._autocast(self.render_dtype):
            for hook in self.hooks:
                hook(self)

    def _preview(self) -> None:
        if not (self.cfg.preview_prompts and self.acc.is_main_process):
            return
        from conceptlab.imaging import make_grid

        with self._autocast(self.render_dtype):
            images = self.method.preview(self.cfg.preview_prompts, self.cfg.preview_seed, self.cfg.preview_steps)
        folder = self.out / "previews"
        folder.mkdir(parents=True, exist_ok=True)
        make_grid(images, cols=len(images), scale=2).save(folder / f"step-{self.step:06d}.png")

    def train(self, resume: bool = False, overwrite: bool = False, stop_at: int | None = None) -> TrainResult:
        """Trains to cfg.steps, from the newest intact checkpoint if `resume`; SIGINT/SIGTERM save a whole step.

        A new run refuses an `out` that holds checkpoints unless `overwrite`, which deletes them first. `stop_at`
        pauses the run after that step, saved as a signal would; resuming it continues exactly.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        self._start(resume, overwrite)
        t0 = time.perf_counter()
        self._start_trackers()
        try:
            with self._signals_caught():
                stopped = self._loop(stop_at)
                if stopped == "done":
                    self._finish()
        finally:
            self._end_trackers()
        return TrainResult(self.step, self.losses, stopped, time.perf_counter() - t0)

    def _log_metrics(self) -> None:
        """Appends the step to OUT/metrics.jsonl (step, loss, lr, each group's lr where they differ, time), which the
        studio plots live, and sends loss and the rates to the --report-to tracker."""
        if self.acc.is_main_process:
            row = {"step": self.step, "steps": self.cfg.steps, "loss": self.losses[-1], "lr": self.last_lr,
                   **({"lr_groups": self.group_lrs} if self.group_lrs else {}), "time": time.time()}
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        groups = {f"lr_group{k}": lr for k, lr in enumerate(self.group_lrs or [])}
        self.log({"loss": self.losses[-1], "lr": self.last_lr, **groups})

    def log(self, values: dict, step: int | None = None) -> None:
        """Sends the numbers among `values` (a hook's validation scores, say) to the --report-to tracker, at `step`
        (default: the step just taken); other values are left out. Nothing happens without a tracker."""
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers and self.acc.trackers:
            self.acc.log(numbers, step=self.step if step is None else step)

    def _start_trackers(self) -> None:
        """accelerate's tracker for --report-to, in OUT/logs/<desc>, with the run's settings as its config. A resumed
        run hides the events past its checkpoint (TensorBoard's purge_step), as metrics.jsonl drops their rows."""
        if self.cfg.report_to == "none":
            return
        flat = _flatten(json.loads(json.dumps({**self.record, "train": asdict(self.cfg)}, default=str)))
        config = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in flat.items()}
        kwargs = {"tensorboard": {"purge_step": self.step + 1}} if self.step and self.cfg.report_to == "tensorboard" else {}
        self.acc.init_trackers(self.desc, config=config, init_kwargs=kwargs)

    def _end_trackers(self) -> None:
        """Flushes and closes the trackers (not accelerate's end_training, which also ends the process group)."""
        for tracker in self.acc.trackers:
            tracker.finish()
        self.acc.trackers = []

    def _trim_metrics(self) -> None:
        """Keeps metrics.jsonl's rows up to the step the run continues from (none for a new run)."""
        path = self.out / "metrics.jsonl"
        if not (self.acc.is_main_process and path.is_file()):
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                continue
        atomic_write_text("".join(kept), path)

    def _start(self, resume: bool, overwrite: bool) -> None:
        """Resumes; or, for a new run, refuses (or with `overwrite` deletes) checkpoints already in `out`."""
        if resume and overwrite:
            raise InputError("--overwrite", True, "contradicts --resume",
                             "Pass --resume to continue the run in --out, or --overwrite to discard it")
        if resume:
            if not self.resume() and self.acc.is_main_process:
                print(f"no checkpoint in {self.out / 'checkpoints'}; starting from step 0")
            self._trim_metrics()
            return
        found = _step_folders(self.out)
        if found and not overwrite:  # checked on every process before any deletes
            raise InputError("--out", str(self.out), f"holds checkpoints of another run (up to {found[-1][1].name})",
                             "Pass --resume to continue it, --overwrite to discard them, or choose another --out")
        self.acc.wait_for_everyone()
        if found and self.acc.is_main_process:
            shutil.rmtree(self.out / "checkpoints")
        self._trim_metrics()  # step 0: a new run starts a new log
        self.acc.wait_for_everyone()

    def _loop(self, stop_at: int | None = None) -> str:
        """Steps until cfg.steps, stop_when, stop_at or a stop signal; returns 'done', 'paused', 'interrupted' or
        'terminated'."""
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.desc,
                   disable=not (self.progress and self.acc.is_local_main_process))
        try:
            while True:
                if stopped := self._stop_asked():  # checked between whole steps only: resume stays exact
                    return self._stop_here(stopped)
                if self.step >= cfg.steps or (self.stop_when and self.stop_when(self)):
                    return "done"
                if stop_at is not None and self.step >= stop_at:
                    return self._stop_here("paused")
                self._one_step()
                bar.update(1)
                bar.set_postfix(loss=f"{self.losses[-1]:.4f}", lr=f"{self.last_lr:.2e}")
                self._log_metrics()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if cfg.preview_every and self.step % cfg.preview_every == 0:
                    self._preview()
        except _Rewound:
            return self._stop_here("interrupted")
        except KeyboardInterrupt:
            if self.acc.is_main_process:
                print(f"\nstopped at once after step {self.step} without saving; the checkpoints in "
                      f"{self.out / 'checkpoints'} are kept")
            raise
        finally:
            bar.close()

    def _finish(self) -> None:
        self.save_checkpoint()
        if self.acc.is_main_process:
            self.method.save_outputs(self.out, self.step, self.losses[-1] if self.losses else None)
            self._write_curve()
        self.acc.wait_for_everyone()

    def _write_curve(self) -> None:
        from conceptlab.plots import plot_loss

        if self.losses:
            plot_loss(list(range(1, len(self.losses) + 1)), self.losses, self.out / "loss.png",
                      smooth=max(1, min(50, len(self.losses) // 5)))
        atomic_write_json({"config": self.record, "train": asdict(self.cfg), "steps": self.step,
                           "final_loss": self.losses[-1] if self.losses else None}, self.out / "training.json")
