"""Seeded, reproducible text-to-image generation with settings stored in every file."""

from __future__ import annotations

import errno
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from conceptlab import __version__
from conceptlab.errors import InputError
from conceptlab.generation.schedulers import SCHEDULERS, set_scheduler
from conceptlab.imaging import make_grid, open_rgb, save_image
from conceptlab.io import append_lines_locked, atomic_write_text, create_unique

FORMATS = ("png", "jpg")


@dataclass
class GenerationConfig:
    """Settings of one generation run; stored in each image and in generations.jsonl."""

    prompt: str
    negative_prompt: str = ""
    n: int = 4  # images; image i uses seed + i through its own generator
    seed: int = 0
    steps: int = 30
    guidance: float = 7.5  # classifier-free guidance scale (Ho & Salimans 2022)
    scheduler: str | None = None  # None: the pipeline's own
    width: int | None = None  # None: the model's native size
    height: int | None = None
    format: str = "png"
    batch_size: int = 4  # images per pipeline call; does not change the pixels beyond float rounding
    grid: bool = False


@dataclass
class Generated:
    """One generated image with its index and seed."""

    image: Image.Image
    index: int
    seed: int


def check_config(cfg: GenerationConfig, pipe=None) -> None:
    """Raises InputError for any bad setting, before anything is computed or written."""
    from conceptlab.validation import BATCH, GUIDANCE, IMAGES, SAMPLING_STEPS, SEED, SIZE, check_seed_range, text

    text("--prompt", cfg.prompt, example="'a sticker of a happy star'")
    text("--negative-prompt", cfg.negative_prompt, allow_empty=True)
    IMAGES.check("-n", cfg.n)
    SAMPLING_STEPS.check("--steps", cfg.steps)
    BATCH.check("--batch-size", cfg.batch_size)
    GUIDANCE.check("--guidance", cfg.guidance)
    SEED.check("--seed", cfg.seed)
    check_seed_range("--seed", cfg.seed, cfg.n)
    if cfg.scheduler is not None and cfg.scheduler not in SCHEDULERS:
        raise InputError("--scheduler", cfg.scheduler, "unknown scheduler", f"Use one of {sorted(SCHEDULERS)}")
    if cfg.format not in FORMATS:
        raise InputError("--format", cfg.format, "unknown image format", f"Use one of {FORMATS}")
    for name, value in (("--width", cfg.width), ("--height", cfg.height)):
        if value is not None:
            SIZE.check(name, value)
    if pipe is not None:
        factor = size_factor(pipe)
        for name, value in (("--width", cfg.width), ("--height", cfg.height)):
            if value is not None and value % factor:
                raise InputError(name, value, f"must be a positive multiple of {factor} (the VAE's factor "
                                 f"{pipe.vae_scale_factor}; diffusers' pipelines also require 8)",
                                 f"Use {max(factor, round(value / factor) * factor)}")


def size_factor(pipe) -> int:
    """The pixel multiple every image size must be: the VAE's factor, and 8, which diffusers' pipelines check."""
    import math

    return math.lcm(8, pipe.vae_scale_factor)


def native_size(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def generate(pipe, cfg: GenerationConfig, indices: list[int] | None = None, progress: bool = True) -> list[Generated]:
    """Generates images `indices` (default all of range(n)) of `cfg`; image i always uses seed + i."""
    check_config(cfg, pipe)
    if cfg.scheduler:
        set_scheduler(pipe, cfg.scheduler)
    indices = list(range(cfg.n)) if indices is None else indices
    images = generate_batch(
        pipe, [cfg.prompt] * len(indices), [cfg.seed + i for i in indices], negative_prompt=cfg.negative_prompt,
        steps=cfg.steps, guidance=cfg.guidance, width=cfg.width, height=cfg.height, batch_size=cfg.batch_size,
        progress=progress,
    )
    return [Generated(im, i, cfg.seed + i) for im, i in zip(images, indices)]


def generate_batch(pipe, prompts: list[str], seeds: list[int], negative_prompt: str = "", steps: int = 30,
                   guidance: float = 7.5, width: int | None = None, height: int | None = None, batch_size: int = 8,
                   progress: bool = True, **call_kwargs) -> list[Image.Image]:
    """One image per (prompt, seed), each from its own generator, `batch_size` per pipeline call."""
    size = native_size(pipe)
    height, width = height or size, width or size
    bar = tqdm(total=len(prompts) * steps, desc="generate", unit="step", disable=not progress)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
        generators = seeded_generators(chunk_seeds)  # on the CPU: the same image for a seed on every device
        out += pipe(
            chunk, negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None,
            num_inference_steps=steps, guidance_scale=guidance, height=height, width=width,
            generator=generators, **({"callback_on_step_end": _advance(bar, len(chunk))} if progress else {}),
            **call_kwargs,
        ).images
    bar.close()
    return out


def _advance(bar, k):
    def callback(pipe, step, timestep, kwargs):
        bar.update(k)
        return kwargs

    return callback


def settings_record(cfg: GenerationConfig, model: str, item: Generated, file: str, size) -> dict:
    """What goes into the image's metadata and its generations.jsonl row."""
    d = asdict(cfg)
    d.pop("n"), d.pop("grid"), d.pop("batch_size"), d.pop("format")
    return {**d, "seed": item.seed, "index": item.index, "file": file, "width": size[0], "height": size[1],
            "model": model, "conceptlab_version": __version__}


def write_generations(items: list[Generated], cfg: GenerationConfig, out_dir: Path, model: str,
                      part: str = "") -> list[dict]:
    """Saves images named by index and seed, with settings embedded; returns their records.

    A name another run already took gets `-1`, `-2`, ... (claimed with O_EXCL), so concurrent runs with
    the same seeds never overwrite each other's images. With `part`, the records also go to that file.
    On an OSError every image of this call is removed (none is listed yet) and an OSError naming the file
    that failed is raised.
    """
    rows, written, name = [], [], ""
    try:
        for item in items:
            path = create_unique(out_dir / f"{item.index:04d}-seed{item.seed}.{cfg.format}")
            written.append(path)
            name = path.name
            row = settings_record(cfg, model, item, name, item.image.size)
            save_image(item.image, path, row)
            rows.append(row)
        if part:
            name = part
            atomic_write_text("".join(json.dumps(r) + "\n" for r in rows), out_dir / part)
    except OSError as e:
        _remove(written)
        raise OSError(e.errno, e.strerror, name) from e
    return rows


def _remove(paths) -> None:
    """Removes the files that exist of `paths`."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out", str(out_dir), "is a file", "Pass a folder path (it is created if missing)")
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise InputError("--out", str(out_dir), f"{probe} is not writable", "Choose a folder you can write to")


def run_generation(pipe, cfg: GenerationConfig, out_dir: str | Path, model: str, progress: bool = True) -> list[dict]:
    """Generates and saves all images, split across accelerate processes when launched with several.

    Every process writes its own images; the main one appends the run's rows to generations.jsonl (sorted
    by index) under a lock, and writes the grid, so the files equal a single-process run's and concurrent
    runs into one folder all keep their rows. If a write fails, the folder stays consistent (every image
    listed exists, every image is listed) and DiskFullError (or the OSError) is raised after cleaning up.
    """
    from accelerate import PartialState

    out_dir = Path(out_dir)
    check_config(cfg, pipe)
    check_output_dir(out_dir)
    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: several CPU processes use gloo
    out_dir.mkdir(parents=True, exist_ok=True)
    if state.num_processes > 1 and state.is_main_process:
        print(f"splitting {cfg.n} images across {state.num_processes} processes")
    pipe.to(state.device)
    with state.split_between_processes(list(range(cfg.n))) as mine:
        items = generate(pipe, cfg, list(mine), progress=progress and state.is_local_main_process)
    run_id, rows = _agree_run_id(state), []
    try:
        write_generations(items, cfg, out_dir, model, part=_part_name(run_id, state.process_index))
        failure = None
    except OSError as e:
        failure = e  # not raised yet: the main process still lists what the other processes wrote
    failure = _first_failure(state, failure)  # also waits for every process's part
    if state.is_main_process:
        try:
            rows = _merge_parts(out_dir, run_id, state.num_processes)
            if cfg.grid and rows and failure is None:
                _write_grid(out_dir, rows)
        except OSError as e:
            failure = failure or e
    failure = _from_main(state, failure)  # every process raises the same error, or none does
    if failure is not None:
        raise _write_error(failure, out_dir)
    return rows


def _agree_run_id(state) -> str:
    """A name for this run's part files: unique per run, made by the main process and shared with the rest."""
    return _from_main(state, f"{os.getpid()}-{secrets.token_hex(4)}")


def _from_main(state, value):
    """The main process's `value`, on every process."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def _first_failure(state, failure: OSError | None) -> OSError | None:
    """The first process's failed write (None if all wrote), on every process; also a barrier."""
    if state.num_processes == 1:
        return failure
    from accelerate.utils import gather_object

    try:
        failures = gather_object([failure])
    except NotImplementedError:  # XLA gathers no objects: each process reports its own failure
        state.wait_for_everyone()
        failures = [failure]
    return next((f for f in failures if f is not None), None)


def _part_name(run_id: str, process_index: int) -> str:
    """The hidden file where one process of one run leaves its rows for the main process."""
    return f".generations.{run_id}.part{process_index}.jsonl"


def _merge_parts(out_dir: Path, run_id: str, num_processes: int) -> list[dict]:
    """Appends the rows of this run's part files to generations.jsonl, sorted by index; removes the parts.

    If the append fails, generations.jsonl is as before and the run's images are removed (none is listed).
    """
    parts = [out_dir / _part_name(run_id, k) for k in range(num_processes)]
    rows = []
    try:
        for part in parts:
            if part.exists():  # a process whose writes failed removed its images and wrote no part
                rows += [json.loads(line) for line in part.read_text().splitlines() if line]
        rows.sort(key=lambda r: r["index"])
        try:  # no rows (every process failed): append_lines_locked leaves the log alone
            append_lines_locked(out_dir / "generations.jsonl", [json.dumps(r) for r in rows])
        except OSError as e:
            _remove(out_dir / r["file"] for r in rows)
            raise OSError(e.errno, e.strerror, "generations.jsonl") from e
    finally:
        _remove(parts)
    return rows


def _write_grid(out_dir: Path, rows: list[dict]) -> None:
    """Writes grid.png, a contact sheet of the images of `rows` captioned with their seeds."""
    images = [open_rgb(out_dir / r["file"]) for r in rows]
    grid = make_grid(images, labels=[f"seed {r['seed']}" for r in rows])
    save_image(grid, out_dir / "grid.png")  # atomic: a concurrent run's grid replaces it whole


# A full disk, a full quota, or a file-size limit (ulimit -f, a FAT volume's 4 GiB)
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFullError(InputError):
    """The output folder filled up; what the run could not list was removed, so the folder is consistent."""

    def __init__(self, out_dir: Path, file: str, cause: OSError, kept: int):
        super().__init__("--out", str(out_dir), f"the disk is full while writing {file} ({cause.strerror}); "
                         f"{kept} images kept and listed in generations.jsonl", "Free space and run again")


def _write_error(e: OSError, out_dir: Path) -> OSError | DiskFullError:
    """The error to raise for a failed write: DiskFullError when the disk is full, else `e` itself."""
    if e.errno not in DISK_FULL:
        return e
    log = out_dir / "generations.jsonl"
    kept = sum(1 for line in log.read_text().splitlines() if line.strip()) if log.exists() else 0
    error = DiskFullError(out_dir, Path(e.filename or "?").name, e, kept)
    error.__cause__ = e  # raised outside the except block, so chain by hand for the traceback
    return error


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per seed: where conceptlab's seeded noise is drawn, whatever the pipeline's device.

    The rule: generators live on the CPU. diffusers' `randn_tensor` draws the starting noise on a CPU
    generator's device and moves it to the pipeline's, so a seed gives the same noise, hence the same image up
    to float rounding, on CPU, CUDA or MPS; a generator on the pipeline's device would give another image per
    device. On a CPU pipeline this changes no pixel. generate_batch (and everything built on it) should draw
    its generators here.
    """
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]
