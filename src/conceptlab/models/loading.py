"""Loads any diffusers Stable Diffusion pipeline: a hub id, a diffusers folder, or a single-file checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from conceptlab.errors import InputError, ModelNotAvailableError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
FAMILIES = ("sd1", "sd2", "sdxl")
# Pipeline classes of families conceptlab has no adapter for, refused by name before any weights load (other
# Stable Diffusion classes, e.g. an img2img pipeline's folder, load: the families read their components).
_OTHER_FAMILIES = {"StableDiffusion3Pipeline": "SD3", "FluxPipeline": "Flux", "PixArtAlphaPipeline": "PixArt-alpha",
                 "PixArtSigmaPipeline": "PixArt-sigma", "KandinskyV22Pipeline": "Kandinsky 2.2",
                 "StableCascadeCombinedPipeline": "Stable Cascade", "AuraFlowPipeline": "AuraFlow",
                 "SanaPipeline": "Sana", "LuminaText2ImgPipeline": "Lumina"}
SDXL_CONFIG_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def shipped_base_model() -> Path:
    """The folder of the small base model that conceptlab ships (trained on the sticker world)."""
    return Path(__file__).resolve().parent / "sticker_base"


def default_model() -> str:
    """The --model default: the shipped base model."""
    return str(shipped_base_model())


def model_label(model: str | Path | None) -> str:
    """How records name a --model: as given, or the shipped base model's folder when none was."""
    return str(model) if model else default_model()


def resolve_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise InputError("dtype", dtype, "unknown dtype", f"Use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def load_pipeline(source: str | Path | None = None, device: str | None = None, dtype=None,
                  config: str | Path | None = None):
    """Returns a diffusers pipeline from a hub id, a diffusers folder or a .safetensors/.ckpt file.

    `source=None` loads the shipped base model. Hub ids resolve through the local Hugging Face cache;
    HF_HUB_OFFLINE=1 is honoured. `config` is for single files: a diffusers folder (or cached hub id) of the
    same architecture whose component configs describe the checkpoint, as diffusers' `from_single_file(config=)`
    takes it. The progress bars of the pipeline's own loop are left to the caller.
    """
    source = str(source) if source is not None else default_model()
    torch_dtype = resolve_dtype(dtype)
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    path = Path(source).expanduser()
    if path.is_dir():
        pipe = _from_folder(path, kwargs)
    elif path.is_file():
        pipe = _from_single_file(path, kwargs, config)
    elif _is_hub_id(source):
        pipe = _from_hub(source, kwargs)
    else:
        raise InputError("--model", source, "no such file or folder (and not a hub id: those look like owner/name)",
                         "Pass a diffusers folder, a .safetensors/.ckpt file, or a hub id such as "
                         "'stable-diffusion-v1-5/stable-diffusion-v1-5'")
    if device is not None:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _is_hub_id(source: str) -> bool:
    """'owner/name' or 'name', not something that looks like a local path."""
    parts = source.split("/")
    return (1 <= len(parts) <= 2 and all(p and not p.startswith((".", "~")) for p in parts)
            and not source.endswith(SINGLE_FILE_SUFFIXES))


def _from_folder(path: Path, kwargs: dict):
    from diffusers import DiffusionPipeline

    if not (path / "model_index.json").is_file():
        raise InputError("--model", str(path), "is a folder without model_index.json",
                         "Pass a diffusers pipeline folder (one written by save_pretrained)")
    from conceptlab.validation import read_json_object

    index = read_json_object("--model", path / "model_index.json")
    _check_pipeline_class(path, index)
    try:
        return DiffusionPipeline.from_pretrained(path, **_sd_kwargs(index), **kwargs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # a folder missing weights or configs
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError("--model", str(path), f"cannot be loaded as a pipeline ({reason})",
                         "Pass a complete diffusers folder (model_index.json and every component's config and "
                         "weights), a .safetensors/.ckpt checkpoint or a hub id") from None


def _check_pipeline_class(path: Path, index: dict) -> None:
    """Refuses a pipeline of a family conceptlab has no adapter for (SD3, Flux, ...), before loading weights."""
    name = index.get("_class_name")
    if name not in _OTHER_FAMILIES:
        return
    raise InputError("--model", str(path), f"is a {name} ({_OTHER_FAMILIES[name]}), which conceptlab does not "
                     "support yet",
                     "Use a Stable Diffusion 1.x, 2.x or SDXL model (StableDiffusionPipeline or "
                     "StableDiffusionXLPipeline); docs/concepts/model-families.md says what a new family needs")


def _sd_kwargs(index: dict) -> dict:
    """Skip the NSFW checker where the pipeline has one: it needs its own weights and blanks sticker art."""
    if index.get("safety_checker") and index["safety_checker"][0] is not None:
        return {"safety_checker": None, "requires_safety_checker": False}
    return {}


def _from_single_file(path: Path, kwargs: dict, config=None):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise InputError("--model", str(path), "is a file but not a checkpoint",
                         f"Pass a {'/'.join(SINGLE_FILE_SUFFIXES)} file or a diffusers folder")
    if path.suffix == ".safetensors":
        from conceptlab.validation import safetensors_header

        safetensors_header("--model", path)
    sdxl = _is_sdxl_checkpoint(path)
    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    if config is not None:
        _check_config_source(config)
        kwargs = {**kwargs, "config": str(config)}
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        return cls.from_single_file(str(path), **kwargs)
    except OSError as e:
        raise ModelNotAvailableError(_single_file_help(path, sdxl, config, e)) from None
    except (SingleFileComponentError, ValueError, KeyError, RuntimeError) as e:  # weights missing or misshapen
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError("--model", str(path), f"cannot be read as a {cls.__name__} checkpoint ({reason})",
                         "Pass a complete checkpoint, and a --model-config of the same architecture") from None


def _check_config_source(config) -> None:
    folder = Path(config).expanduser()
    if folder.exists() and not (folder / "model_index.json").is_file():
        raise InputError("--model-config", str(config), "is not a diffusers pipeline folder (no model_index.json)",
                         "Pass the folder of a diffusers pipeline of the checkpoint's architecture, or a cached hub id")


def _single_file_help(path: Path, sdxl: bool, config, error: OSError) -> str:
    reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    if config is not None:
        return (f"--model-config={str(config)!r}: diffusers could not read the component configs for "
                f"{path.name} from it ({reason}). Pass a complete diffusers folder of the same architecture.")
    kind = (f"an SDXL checkpoint; diffusers reads its layout from the configs of {SDXL_CONFIG_REPO}" if sdxl else
            "a Stable Diffusion 1.x/2.x checkpoint; diffusers reads its layout from the matching hub configs")
    repo = SDXL_CONFIG_REPO if sdxl else "stable-diffusion-v1-5/stable-diffusion-v1-5"
    return (f"--model={str(path)!r} is {kind} and could not get them ({reason}). Pass --model-config with a "
            f"diffusers folder of the same architecture (e.g. `huggingface-cli download {repo} --exclude "
            "'*.safetensors' '*.bin'` on a connected machine, then copy the folder here), or run the same command "
            "once where the hub is reachable so the configs are cached.")


def _is_sdxl_checkpoint(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any(k.startswith("conditioner.embedders.1") for k in f.keys())


def _from_hub(repo_id: str, kwargs: dict):
    from diffusers import DiffusionPipeline
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or partially): try the network unless offline
        if offline:
            raise ModelNotAvailableError(_not_cached(repo_id, "HF_HUB_OFFLINE is set")) from None
        try:
            return DiffusionPipeline.from_pretrained(repo_id, **kwargs)
        except OSError as e:
            reason = f"the hub could not be reached: {str(e).splitlines()[0][:160]}"
            raise ModelNotAvailableError(_not_cached(repo_id, reason)) from None
    return _from_folder(Path(folder), kwargs)


def _not_cached(repo_id: str, why: str) -> str:
    return (
        f"--model={repo_id!r} is not in the local Hugging Face cache and cannot be downloaded ({why}). "
        f"On a connected machine run `huggingface-cli download {repo_id}` (or load it once with "
        f"DiffusionPipeline.from_pretrained), then copy its folder here and pass the folder as --model, "
        "or copy the cache to $HF_HOME."
    )


def pipeline_family(pipe) -> str:
    """'sd1', 'sd2' or 'sdxl', from the pipeline's class and text encoder width."""
    if hasattr(pipe, "text_encoder_2"):
        return "sdxl"
    width = pipe.text_encoder.config.hidden_size
    return "sd2" if width == 1024 else "sd1"


def require_sd(pipe, feature: str) -> None:
    """Refuses pipelines a feature does not support yet, saying so plainly."""
    if pipeline_family(pipe) == "sdxl":
        raise InputError("--model", type(pipe).__name__, f"{feature} does not support SDXL yet",
                         "Use a Stable Diffusion 1.x or 2.x model")
