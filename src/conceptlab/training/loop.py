"""The one training loop. A method says what it trains and what its loss is; the loop does the rest.

accelerate (processes, mixed precision), gradient accumulation, lr schedule with warm-up, a progress bar
with the loss, a NaN/inf guard, atomic checkpoints, exact resume, Ctrl-C saves, preview grids.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from conceptlab.errors import ConceptlabError, InputError
from conceptlab.io import atomic_save_torch, atomic_write_json, load_torch_checkpoint

LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


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
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no" or "bf16" (CPU autocast)
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end (and on Ctrl-C)
    keep_checkpoints: int = 2
    preview_every: int = 0  # 0: no previews
    preview_prompts: list[str] = field(default_factory=list)
    preview_steps: int = 20
    preview_seed: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", getattr(self, name), "must be >= 1", "Use 1 or more")
        if self.lr <= 0:
            raise InputError("--lr", self.lr, "must be > 0", "Use e.g. 5e-3 for textual inversion, 1e-4 for LoRA")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError("--lr-schedule", self.lr_schedule, "unknown schedule", f"Use one of {LR_SCHEDULES}")
        if self.mixed_precision not in ("no", "bf16"):
            raise InputError("--mixed-precision", self.mixed_precision, "unsupported", "Use 'no' or 'bf16'")
        if self.mixed_precision == "bf16":
            from conceptlab.hardware import warn_if_slow_bf16

            warn_if_slow_bf16("--mixed-precision=bf16")


class TrainingMethod(Protocol):
    """What a method gives the loop."""

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor: ...

    def trainable_state(self) -> dict[str, torch.Tensor]: ...

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def save_outputs(self, out: Path, step: int, loss: float | None) -> None: ...

    def preview(self, prompts: list[str], seed: int, steps: int) -> list: ...


class TrainingDiverged(ConceptlabError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    steps: int
    losses: list[float]
    stopped: str  # "done", "interrupted"
    seconds: float


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule in ("constant", "constant_with_warmup"):
            return warm
        progress = min(1.0, step / max(1, cfg.steps))
        if cfg.lr_schedule == "linear":
            return warm * (1 - progress)
        return warm * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "loop.json").is_file()) if root.is_dir() else []


def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, with torch's fused kernel for floating-point tensors on CPU or CUDA: the same update, and on CPU
    2.3x faster than the per-tensor loop torch picks by default (102M parameters: 0.08 s against 0.18 s)."""
    params = list(params)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


class Trainer:
    """Runs a TrainingMethod with TrainConfig, writing checkpoints and outputs into `out`."""

    def __init__(self, method: TrainingMethod, cfg: TrainConfig, out: str | Path, config_record: dict | None = None):
        from accelerate import Accelerator

        cfg.check()
        self.method, self.cfg, self.out = method, cfg, Path(out)
        self.acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
        self.record = config_record or {}
        self.params = [p for p in method.parameters() if p.requires_grad]
        scale = cfg.batch_size * cfg.gradient_accumulation * self.acc.num_processes if cfg.scale_lr else 1
        self.opt = make_optimizer(self.params, cfg.lr * scale, cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(cfg))
        # each process draws its own batches; the generator's state is part of every checkpoint
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.acc.process_index)
        self.step, self.losses = 0, []

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        final = self.out / "checkpoints" / f"step-{self.step:06d}"
        rank = self.acc.process_index
        if self.acc.is_main_process:
            tmp = final.with_name(final.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            atomic_save_torch({k: v.detach().cpu() for k, v in self.method.trainable_state().items()},
                              tmp / "trainable.pt")
            atomic_save_torch({"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}, tmp / "optimizer.pt")
        self.acc.wait_for_everyone()
        tmp = final.with_name(final.name + ".tmp")
        atomic_save_torch({"generator": self.gen.get_state()}, tmp / f"rng-{rank}.pt")
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            atomic_write_json({"step": self.step, "losses": self.losses, "config": self.record}, tmp / "loop.json")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in _checkpoints(self.out)[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def resume(self) -> bool:
        """Loads the newest complete checkpoint in `out`; returns whether there was one."""
        found = _checkpoints(self.out)
        if not found:
            return False
        ck = found[-1]
        self.method.load_trainable_state(load_torch_checkpoint(ck / "trainable.pt"))
        state = load_torch_checkpoint(ck / "optimizer.pt")
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(load_torch_checkpoint(ck / f"rng-{self.acc.process_index}.pt")["generator"])
        loop = json.loads((ck / "loop.json").read_text())
        self.step, self.losses = loop["step"], loop["losses"]
        return True

    # ---------------------------------------------------------------- the loop
    def _one_step(self) -> float:
        cfg, total = self.cfg, 0.0
        for _ in range(cfg.gradient_accumulation):
            with self.acc.autocast():
                loss = self.method.loss(cfg.batch_size, self.gen)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {self.step + 1}; training stopped without saving it. "
                    f"The last good checkpoint is kept in {self.out / 'checkpoints'}; try a lower --lr"
                )
            (loss / cfg.gradient_accumulation).backward()
            total += loss.item() / cfg.gradient_accumulation
        if self.acc.num_processes > 1:  # average gradients across processes
            for p in self.params:
                if p.grad is not None:
                    p.grad = self.acc.reduce(p.grad, reduction="mean")
            total = self.acc.reduce(torch.tensor(total), reduction="mean").item()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return total

    def _preview(self) -> None:
        if not (self.cfg.preview_prompts and self.acc.is_main_process):
            return
        from conceptlab.imaging import make_grid

        images = self.method.preview(self.cfg.preview_prompts, self.cfg.preview_seed, self.cfg.preview_steps)
        folder = self.out / "previews"
        folder.mkdir(parents=True, exist_ok=True)
        make_grid(images, cols=len(images), scale=2).save(folder / f"step-{self.step:06d}.png")

    def train(self, resume: bool = False) -> TrainResult:
        """Trains to cfg.steps (from the last checkpoint if `resume`); Ctrl-C saves a checkpoint first."""
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and not self.resume():
            print(f"no checkpoint in {self.out / 'checkpoints'}; starting from step 0")
        t0, stopped = time.perf_counter(), "done"
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train", disable=not self.acc.is_local_main_process)
        try:
            while self.step < self.cfg.steps:
                loss = self._one_step()
                self.step += 1
                self.losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.sched.get_last_lr()[0]:.2e}")
                if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                    self._preview()
        except KeyboardInterrupt:
            stopped = "interrupted"
            path = self.save_checkpoint()
            print(f"\ninterrupted at step {self.step}; checkpoint saved to {path}. Run again with --resume.")
        finally:
            bar.close()
        if stopped == "done":
            self.save_checkpoint()
            if self.acc.is_main_process:
                self.method.save_outputs(self.out, self.step, self.losses[-1] if self.losses else None)
                self._write_curve()
            self.acc.wait_for_everyone()
        return TrainResult(self.step, self.losses, stopped, time.perf_counter() - t0)

    def _write_curve(self) -> None:
        from conceptlab.plots import plot_loss

        if self.losses:
            plot_loss(list(range(1, len(self.losses) + 1)), self.losses, self.out / "loss.png",
                      smooth=max(1, min(50, len(self.losses) // 5)))
        atomic_write_json({"config": self.record, "train": asdict(self.cfg), "steps": self.step,
                           "final_loss": self.losses[-1] if self.losses else None}, self.out / "training.json")
