"""Every tensor lands on the pipeline's device: train, generate, edit and invert on a device that is not the CPU.

No GPU is lent to us, so the pipeline runs on a fake accelerator: PyTorch's PrivateUse1 backend set up from
Python (`torch.utils.backend_registration._setup_privateuseone_for_python_backend`, renamed `fakegpu`),
whose tensors are CPU tensors wrapped in a subclass that reports `fakegpu:0`. A TorchDispatchMode runs every
op on the wrapped CPU data and refuses, as CUDA does, an op that mixes a `fakegpu` tensor with a CPU tensor
of one or more dimensions (0-d CPU tensors are scalars, which CUDA accepts too; a CPU index into a device
tensor is accepted, as CUDA accepts it), and a factory call that draws on `fakegpu` with a CPU generator. The
data are real, so `.item()`, schedulers, `torch.equal`, numpy and PIL at the end all work.

Why not PyTorch's `meta` device, which issue #24 suggests: measured with torch 2.13 and diffusers 0.42,
(1) meta cannot carry a pipeline: DDIMScheduler.step indexes `alphas_cumprod` with the timestep, which is a
`.item()` on a meta tensor, so no generation, edit or inversion runs; the training loop's NaN guard and
`loss.item()` stop it the same way; (2) meta does not catch every stray tensor a GPU refuses:
`F.linear(cpu_input, meta_weight)` returns a CPU tensor, `torch.randn(..., generator=cpu, device="meta")`
works, and a CPU tensor indexed by a meta index works. `meta + cpu` (n-d) and `torch.cat` do raise.

The fake backend changes process-wide state (torch.accelerator reports it), so the checks run in one child
process (`python tests/test_device_placement.py NAME...`), which prints one JSON line per check.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

FAKE = "fakegpu"
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the fake device (used in the child process)
ATEN = torch.ops.aten
INDEXING = {ATEN.index.Tensor, ATEN.index_put_.default, ATEN.index_put.default, ATEN._index_put_impl_.default}


class StrayTensor(RuntimeError):
    """An op mixed a CPU tensor with tensors on the device (a GPU would refuse it the same way)."""


class OnFake(torch.Tensor):
    """A CPU tensor (`.elem`) that reports the fake device."""

    @staticmethod
    def __new__(cls, elem):
        t = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                device=torch.device(FAKE, 0), requires_grad=elem.requires_grad)
        t.elem = elem
        return t

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})

    def __repr__(self):
        return f"OnFake({self.elem!r})"

    def untyped_storage(self):  # safetensors compares storages to find shared tensors
        return self.elem.untyped_storage()

    def data_ptr(self):
        return self.elem.data_ptr()

    def __reduce_ex__(self, protocol):  # torch.save: as the CPU tensor (what map_location="cpu" loads)
        return self.elem.__reduce_ex__(protocol)

    @property
    def data(self):
        return torch.Tensor.data.__get__(self)

    @data.setter
    def data(self, new):  # `param.data = new` (transformers' resize_token_embeddings): keep the new data
        torch.Tensor.data.__set__(self, new)
        self.elem = new.elem if isinstance(new, OnFake) else new


def _on_fake(device) -> bool:
    return device is not None and torch.device(device).type == FAKE


def _check(func, args, kwargs) -> None:
    """Raises StrayTensor where CUDA would raise a device mismatch."""
    leaves = [t for t in pytree.arg_tree_leaves(*args, **kwargs) if isinstance(t, torch.Tensor)]
    if func in INDEXING and isinstance(args[0], OnFake):  # CPU indices into a device tensor: CUDA moves them
        indices = {id(t) for t in args[1] if isinstance(t, torch.Tensor)}
        leaves = [t for t in leaves if id(t) not in indices]
    stray = [t for t in leaves if not isinstance(t, OnFake) and t.device.type == "cpu" and t.dim() > 0]
    if func is not ATEN.copy_.default and stray and any(isinstance(t, OnFake) for t in leaves):
        raise StrayTensor(f"{func}: a CPU tensor of shape {tuple(stray[0].shape)} ({stray[0].dtype}) meets "
                          f"tensors on {FAKE}")
    gen = kwargs.get("generator")
    if _on_fake(kwargs.get("device")) and gen is not None and gen.device.type != FAKE:
        raise StrayTensor(f"{func}: draws on {FAKE} with a {gen.device.type} generator")


def _run(func, args, kwargs):
    """The op on the wrapped CPU data, after _check; its tensors wrapped again unless it went to the CPU."""
    _check(func, args, kwargs)
    fake = any(isinstance(t, OnFake) for t in pytree.arg_tree_leaves(*args, **kwargs))
    to_fake = _on_fake(kwargs.get("device"))
    a, k = pytree.tree_map_only(OnFake, lambda t: t.elem, (args, kwargs))
    if to_fake:
        k["device"] = torch.device("cpu")
    out = func(*a, **k)
    returns = func._schema.returns
    if len(returns) == 1 and returns[0].alias_info is not None and returns[0].alias_info.is_write:
        return kwargs.get("out", args[0])  # in place (or out=): the caller's tensor is the result
    to_cpu = kwargs.get("device") is not None and not to_fake
    if (fake or to_fake) and not to_cpu:
        out = pytree.tree_map_only(torch.Tensor, lambda t: t if isinstance(t, OnFake) else OnFake(t), out)
    return out


class FakeDevice(TorchDispatchMode):
    """Runs every op, factory calls included, through _run()."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _install() -> torch.device:
    """Registers the `fakegpu` backend (once per process; it cannot be undone) and returns its device."""
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    if not hasattr(torch, FAKE):
        _setup_privateuseone_for_python_backend(rename=FAKE)
        # torch.tensor(data, device=...) and indexing with a list allocate with the Python key excluded, so they
        # reach the backend itself: these kernels make and fill its tensors
        lib = torch.library.Library("aten", "IMPL")
        for name in ("empty_strided", "empty.memory_format", "copy_", "_copy_from", "_to_copy", "lift_fresh"):
            packet, _, overload = name.partition(".")
            op = getattr(getattr(ATEN, packet), overload or "default")
            lib.impl(name, lambda *args, _op=op, **kwargs: _run(_op, args, kwargs), "PrivateUse1")
        torch._fakegpu_library = lib  # kept alive for the process
    return torch.device(FAKE, 0)


# ---------------------------------------------------------------- the paths checked (child process only)
def _pipeline(family: str, device):
    """A tiny pipeline of `family` on `device`, every parameter and buffer checked to be there."""
    from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline

    pipe = (build_sdxl_pipeline() if family == "sdxl" else build_pipeline("tiny")).to(device)
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.device != device]
            assert not left, f"{name}: {left[:3]} not moved to {device}"
    return pipe


def _concept(root: Path) -> str:
    from conceptlab.world.export import export_images

    folder = root / "concept"
    if not folder.is_dir():
        export_images(folder, 2, seed=0, size=32, only={"object": {"broccoli"}, "emotion": {"happy"}})
    return str(folder)


def _train(kind: str, pipe, root: Path) -> None:
    """One step of `kind` through the shared loop: loss, backward, AdamW, checkpoint, outputs and a preview."""
    from conceptlab.training.dreambooth import DreamBoothConfig, SubjectConfig, train_dreambooth
    from conceptlab.training.loop import TrainConfig
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversionConfig, train_textual_inversion

    train = TrainConfig(steps=1, batch_size=1, lr=1e-3, preview_every=1, preview_prompts=["a <t> star"],
                        preview_steps=2)
    if kind == "ti":
        concepts = [ConceptConfig("<t>", _concept(root), init="broccoli"), ConceptConfig("<u>", _concept(root))]
        cfg = TextualInversionConfig(concepts=concepts, train=train)  # <u>: no init word, random start vectors
        _, result = train_textual_inversion(cfg, root / kind, pipe=pipe)
    else:
        full = kind == "full"  # the full fine-tune also trains the text encoders, with prior preservation
        cfg = DreamBoothConfig(subjects=[SubjectConfig("tuki", _concept(root), "broccoli")], lora=not full,
                               train_text_encoder=full, prior_preservation=full, class_images=1, offset_noise=0.05,
                               min_snr_gamma=5.0, train=train)
        _, result = train_dreambooth(cfg, root / kind, pipe=pipe)
    assert result.steps == 1 and result.losses[0] == result.losses[0], result


def _generate(pipe, root: Path) -> None:
    from conceptlab.generation import GenerationConfig, generate

    images = generate(pipe, GenerationConfig(prompt="a sticker of a happy star", n=2, steps=2, batch_size=2),
                      progress=False)
    assert len(images) == 2 and images[0].image.size[0] > 0


def _edit(pipe, root: Path) -> None:
    """Word swap with re-weighting and a local blend, then refinement with the difference mask."""
    from conceptlab.editing.edit import edit

    a = edit(pipe, "a sticker of a happy star", "a sticker of a sad star", steps=2, reweight={"sad": 2.0},
             blend=["star"])
    b = edit(pipe, "a sticker of a happy star", "a sticker of a happy star at the beach", steps=2,
             blend_mask="difference")
    assert len(a.images) == len(b.images) == 2 and a.mode == "replace" and b.mode == "refine"


def _invert(pipe, root: Path) -> None:
    """Every inversion method, each reconstructed and edited from."""
    from conceptlab.editing.edit import edit
    from conceptlab.editing.inversion import METHODS, invert, reconstruct
    from conceptlab.generation import GenerationConfig, generate

    image = generate(pipe, GenerationConfig(prompt="a star", n=1, steps=2), progress=False)[0].image
    for method in METHODS:
        inv = invert(pipe, image, "a sticker of a happy star", method, steps=2, inner_steps=2)
        reconstruct(pipe, inv, output_type="latent")
        edit(pipe, "a sticker of a happy star", "a sticker of a sad star", inversion=inv)


def _stray_callback(kind: str):
    """A step callback that adds noise to the latents: `kind` says how the noise is made."""

    def callback(pipe, step, timestep, kwargs):
        latents = kwargs["latents"]
        g = torch.Generator().manual_seed(step)
        if kind == "stray":  # the bug: drawn on the CPU and never moved
            noise = torch.randn(latents.shape, generator=g)
        elif kind == "generator":  # the other bug: a CPU generator asked to draw on the device
            noise = torch.randn(latents.shape, generator=g, device=latents.device)
        else:  # the rule: draw on the CPU generator, then move
            noise = torch.randn(latents.shape, generator=g).to(latents.device, latents.dtype)
        kwargs["latents"] = latents + 0.01 * noise
        return kwargs

    return callback


def _injected(kind: str):
    def run(pipe, root: Path) -> None:
        pipe("a star", num_inference_steps=2, output_type="latent", callback_on_step_end=_stray_callback(kind))

    return run


PATHS = {"generate": _generate, "edit": _edit, "invert": _invert,
         "ti": lambda pipe, root: _train("ti", pipe, root), "lora": lambda pipe, root: _train("lora", pipe, root),
         "full": lambda pipe, root: _train("full", pipe, root),
         "inject-stray": _injected("stray"), "inject-generator": _injected("generator"), "inject-moved": _injected("moved")}
FAMILIES = ("sd1", "sdxl")


def _run_checks(names: list[str]) -> None:
    """Runs each 'family:path' check on the fake device; prints one JSON line per check."""
    import warnings

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    device = _install()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            family, path = name.split(":")
            root = Path(tmp) / family
            root.mkdir(exist_ok=True)
            row, t0 = {"check": name, "ok": True}, time.perf_counter()
            try:
                with FakeDevice():
                    PATHS[path](_pipeline(family, device), root)
            except StrayTensor as e:
                row = {"check": name, "ok": False, "stray": True, "error": str(e), "where": _where(e)}
            except Exception as e:  # noqa: BLE001 - reported to the parent test, which fails on it
                row = {"check": name, "ok": False, "stray": False, "error": f"{type(e).__name__}: {e}"[:400],
                       "where": _where(e)}
            print(json.dumps({**row, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def _where(e: BaseException) -> list[str]:
    """The innermost conceptlab frames of the traceback, as 'file:line code'."""
    harness = ("_run", "_check", "__torch_dispatch__", "_run_checks")  # the fake device's own frames say nothing
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if ("conceptlab" in f.filename or f.filename == __file__) and f.name not in harness]
    return [f"{Path(f.filename).name}:{f.lineno} {f.line}" for f in frames[-4:]]


# ---------------------------------------------------------------- the tests
CHECKS = [f"{family}:{path}" for family in FAMILIES for path in ("generate", "edit", "invert", "ti", "lora", "full")]
INJECTED = {"sd1:inject-stray": "a CPU tensor of shape (1, 4, 16, 16)", "sd1:inject-generator": "cpu generator"}


@pytest.fixture(scope="module")
def placement(request):
    """{check: its JSON row}, for the checks this session selected, all run in one child process."""
    names = [item.callspec.params["check"] for item in request.session.items
             if item.module is sys.modules[__name__] and hasattr(item, "callspec") and "check" in item.callspec.params]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, *dict.fromkeys(names)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=1800)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"check"')]
    assert rows or proc.returncode == 0, proc.stderr[-3000:]
    return {row["check"]: row | {"stderr": proc.stderr[-3000:]} for row in rows}


# the default suite keeps one generation, edit, TI and LoRA step (SDXL: the edit and TI, its two encoders); the
# rest runs with `make test-slow`: inversion (four methods, null-text optimisation) and the full fine-tune (class
# images, save_pretrained) take a minute each through the Python dispatch
FAST = {"sd1:generate", "sd1:edit", "sd1:ti", "sd1:lora", "sdxl:edit", "sdxl:ti"}


@pytest.mark.parametrize("check", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CHECKS])
def test_runs_on_a_device_that_is_not_the_cpu(check, placement):
    """Train (TI, LoRA, full fine-tune), generate, edit and invert with every tensor on the pipeline's device."""
    row = placement.get(check)
    assert row is not None, f"{check} did not report (the child process died?)"
    assert row["ok"], f"{check}: {row['error']}\n  " + "\n  ".join(row["where"])


@pytest.mark.parametrize("check", [*INJECTED, "sd1:inject-moved"])
def test_a_stray_cpu_tensor_is_caught(check, placement):
    """The check can fail: noise drawn on the CPU and never moved, or a CPU generator asked to draw on the device,
    is refused where it happens; the rule (CPU generator, then .to(device)) passes."""
    row = placement[check]
    if check in INJECTED:
        assert not row["ok"] and row["stray"] and INJECTED[check] in row["error"], row
        assert any("_stray_callback" in w or "noise" in w for w in row["where"]), row["where"]
    else:
        assert row["ok"], row


# ---------------------------------------------------------------- low-precision models on the CPU
# max / mean absolute difference from float32 allowed (pixels in [0, 1]), over 3 steps; measured on the tiny
# pipelines (SD 1.x and SDXL alike): float16 at most 0.004 and 4e-4 on average, bfloat16 0.031 and 3.8e-3
PIXEL_TOL = {"float16": (3 / 255, 1e-3), "bfloat16": (16 / 255, 1e-2)}


@pytest.fixture(scope="module")
def low_precision_pipes():
    from conceptlab.models.tiny import build_pipeline, build_sdxl_pipeline

    return {"sd1": build_pipeline("tiny"), "sdxl": build_sdxl_pipeline()}


def _pixels(pipe):
    """(generation (1, H, W, 3), edit (2, H, W, 3)) of the tiny pipeline, in [0, 1]."""
    from conceptlab.editing.edit import edit
    from conceptlab.generation.generate import seeded_generators

    gen = pipe("a sticker of a happy star", num_inference_steps=3, generator=seeded_generators([0]), output_type="np")
    edited = edit(pipe, "a sticker of a happy star", "a sticker of a sad star", steps=3).images
    return gen.images.astype(np.float64), np.stack([np.asarray(im, dtype=np.float64) / 255 for im in edited])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_low_precision_model_generates_and_edits_on_the_cpu_close_to_float32(family, dtype, low_precision_pipes):
    pipe = low_precision_pipes[family]
    reference = _pixels(pipe)
    low = copy.deepcopy(pipe).to(dtype=getattr(torch, dtype))
    assert {p.dtype for p in low.unet.parameters()} == {getattr(torch, dtype)}
    most, mean = PIXEL_TOL[dtype]
    for got, want in zip(_pixels(low), reference):
        assert np.isfinite(got).all() and got.shape == want.shape
        diff = np.abs(got - want)
        assert diff.max() <= most and diff.mean() <= mean, (diff.max(), diff.mean())


if __name__ == "__main__":
    _run_checks(sys.argv[1:])
