"""The optimizer's state in a full fine-tune: bitsandbytes' 8-bit AdamW (`--optimizer adamw8bit`) and Adafactor
against torch's AdamW, on every weight of the shipped base model's UNet.

The state is what the optimizer holds after its first step (AdamW: two float32 moments per weight); the step
time is the median of a few steps on the same gradients, against torch's fused AdamW. Adafactor factors only a
weight's last two dimensions, so on this convolution-heavy UNet it saves less than on SDXL's attention-heavy one.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.common import Result

TITLE = "The optimizer's memory"  # its table on docs/results/benchmarks.md (benchmarks/record.py)


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if torch.is_tensor(v))


def _measure(params: list[torch.nn.Parameter], kind: str, steps: int) -> tuple[int, float]:
    """(bytes of state after the first step, median seconds per step) of make_optimizer(kind) on `params`."""
    from conceptlab.training.loop import make_optimizer

    opt, times = make_optimizer(params, 1e-5, 1e-2, kind=kind), []
    for _ in range(steps + 1):  # the first step allocates the state and is not timed
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    held = _state_bytes(opt)
    del opt
    return held, statistics.median(times[1:])


def run(quick: bool = False) -> list[Result]:
    from conceptlab.models.loading import load_pipeline

    unet = load_pipeline(None).unet
    params = list(unet.parameters())
    g = torch.Generator().manual_seed(0)
    for p in params:  # one fixed gradient for every optimizer (the state's size does not depend on it)
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    steps = 1 if quick else 3
    ref_bytes, ref_time = _measure(params, "adamw", steps)
    n = sum(p.numel() for p in params)
    out = []
    for kind in ("adamw8bit", "adafactor"):
        held, secs = _measure(params, kind, steps)
        detail = {"weights": n, "repeats": steps, "bytes": held, "reference_bytes": ref_bytes, "seconds_per_step": secs,
                  "reference_seconds_per_step": ref_time}
        print(f"  {kind}: {held / 2**20:.1f} MB of state for {n / 1e6:.1f}M weights (AdamW {ref_bytes / 2**20:.1f} MB); "
              f"a step {secs:.3f} s (AdamW {ref_time:.3f} s)")
        out.append(Result(f"optimizer state, full fine-tune of the shipped UNet: {kind} vs AdamW", held / 2**20,
                          ref_bytes / 2**20, "MB", "ratio <= 0.3", detail))
        out.append(Result(f"optimizer step, full fine-tune of the shipped UNet: {kind} vs AdamW", secs, ref_time,
                          "s/step", "none: measured, not a goal (CPU kernels; make gpu-check times a GPU)", detail))
    return out
