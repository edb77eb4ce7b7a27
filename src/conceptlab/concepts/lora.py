"""LoRA files: diffusers format and kohya/A1111 format, conversion between them, merging into a pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conceptlab.errors import InputError
from conceptlab.io import atomic_write_bytes

DIFFUSERS_NAME = "pytorch_lora_weights.safetensors"
KOHYA_NAME = "lora.kohya.safetensors"


def _rewrite_with_metadata(path: Path, meta: dict) -> None:
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(path), framework="pt") as f:
        old = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    merged = {**old, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
    atomic_write_bytes(save(tensors, metadata=merged), path)


def peft_state_dicts(pipe) -> dict[str, dict[str, torch.Tensor]]:
    """The LoRA weights of the UNet and of every text encoder that has adapters, in peft's key format,
    by pipeline attribute (unet, text_encoder, text_encoder_2)."""
    from peft.utils import get_peft_model_state_dict

    out = {"unet": get_peft_model_state_dict(pipe.unet)}
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(getattr(pipe, name, None), "peft_config", None):
            out[name] = get_peft_model_state_dict(getattr(pipe, name))
    return out


def save_lora(pipe, folder: str | Path, meta: dict) -> dict[str, Path]:
    """Writes the pipeline's LoRA adapters as diffusers' file and a kohya/A1111 file, both with `meta`."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft = peft_state_dicts(pipe)
    layers = {f"{name}_lora_layers": convert_state_dict_to_diffusers(sd) for name, sd in peft.items()}
    type(pipe).save_lora_weights(folder, safe_serialization=True, **layers)  # SD or SDXL: the pipeline's own
    diffusers_file = folder / DIFFUSERS_NAME
    _rewrite_with_metadata(diffusers_file, {"conceptlab": meta})
    # diffusers' converter wants module-prefixed peft keys and names the encoders lora_te1_/lora_te2_, as kohya
    # does for SDXL; for SD 1.x/2.x kohya and A1111 call the one text encoder lora_te_
    prefixed = {f"{prefix}.{k}": v for prefix, sd in peft.items() for k, v in sd.items()}
    kohya = convert_state_dict_to_kohya(prefixed)
    if not hasattr(pipe, "text_encoder_2"):
        kohya = {k.replace("lora_te1_", "lora_te_", 1): v for k, v in kohya.items()}
    from safetensors.torch import save

    kohya_file = folder / KOHYA_NAME
    atomic_write_bytes(save({k: v.contiguous() for k, v in kohya.items()},
                            metadata={"conceptlab": json.dumps(meta), "ss_network_dim": str(meta.get("rank")),
                                      "ss_network_module": "networks.lora"}), kohya_file)
    return {"diffusers": diffusers_file, "kohya": kohya_file}


def lora_format(path: str | Path, argument: str = "lora") -> str:
    """'kohya' (lora_unet_*/lora_te_* keys) or 'diffusers' (unet.* / text_encoder.* keys), read by content."""
    from conceptlab.validation import safetensors_header

    keys = [k for k in safetensors_header(argument, path) if k != "__metadata__"]
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        return "kohya"
    if any(k.startswith(("unet.", "text_encoder.")) for k in keys):
        return "diffusers"
    what = "a textual-inversion embedding" if set(keys) in ({"emb_params"}, {"clip_l", "clip_g"}) or len(keys) == 1 \
        else "not a LoRA file"
    raise InputError(argument, str(path), f"is {what}, not a LoRA conceptlab can read",
                     "Pass a diffusers or kohya LoRA (embeddings go to --concepts)")


def check_lora_values(path: str | Path, argument: str = "lora") -> None:
    """Refuses a LoRA whose weights hold NaN or inf (it would turn every image black)."""
    from safetensors import safe_open

    from conceptlab.validation import finite_tensor

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            finite_tensor(argument, f.get_tensor(key), f"{path} ({key})")


def parse_lora_specs(specs: list[str], argument: str = "--lora") -> list[tuple[Path, float]]:
    """['a.safetensors', 'b.safetensors:0.6'] -> [(a, 1.0), (b, 0.6)], each file checked by content."""
    from conceptlab.validation import SCALE

    out = []
    for spec in specs or []:
        path, sep, scale = spec.rpartition(":") if ":" in spec[2:] else (spec, "", "")
        value = SCALE.check(argument, scale) if sep else 1.0
        lora_format(path, argument)
        out.append((Path(path), value))
    if len({p.resolve() for p, _ in out}) != len(out):
        raise InputError(argument, specs, "names the same file twice", "Pass each LoRA once")
    return out


def apply_loras(pipe, loras: list[tuple[Path, float]], argument: str = "--lora", keep: tuple[str, ...] = ()) -> None:
    """Loads each LoRA as its own adapter and activates them all at their scales (diffusers' set_adapters);
    `keep`: adapters loaded already (a bundle's, see concepts.bundle) that stay active at scale 1."""
    names = []
    for k, (path, _) in enumerate(loras):
        check_lora_values(path, argument)
        load_lora(pipe, path, adapter_name=f"lora{k}", argument=argument)
        names.append(f"lora{k}")
    pipe.set_adapters([*keep, *names], adapter_weights=[*[1.0] * len(keep), *(scale for _, scale in loras)])


def check_lora_fits(pipe, path: str | Path, argument: str = "lora") -> None:
    """Refuses a LoRA made for another architecture, naming the first mismatching layer."""
    import re

    from conceptlab.models.families import family_of

    family = family_of(pipe)
    if any(k.startswith(("text_encoder_2.", "lora_te2_")) for k in _keys(path)) and len(family.slots) != 2:
        raise InputError(argument, str(path), f"was made for SDXL (it holds a second text encoder's layers), and "
                         f"this is a {family.name} pipeline", "Use a LoRA trained for this model family")
    state, _ = type(pipe).lora_state_dict(str(path))
    modules = dict(pipe.unet.named_modules())
    # peft "x.to_k.lora_A.weight", diffusers "x.to_k.lora.down.weight", processor "x.processor.to_k_lora.down.weight"
    pattern = re.compile(r"^(.*?)(\.lora_A|\.lora_B|\.lora\.down|\.lora\.up|_lora\.down|_lora\.up)\.weight$")
    for key, value in state.items():
        match = pattern.match(key[len("unet."):].replace(".processor.", ".")) if key.startswith("unet.") else None
        if match is None:
            continue
        name = match.group(1) + (".0" if match.group(1).endswith("to_out") else "")
        target = modules.get(name)
        if target is None or not hasattr(target, "in_features"):
            raise InputError(argument, str(path), f"targets layer {name!r}, which this UNet does not have",
                             "Use a LoRA trained for this model's architecture")
        down = match.group(2) in (".lora_A", ".lora.down", "_lora.down")
        size, expected = (value.shape[1], target.in_features) if down else (value.shape[0], target.out_features)
        if size != expected:
            raise InputError(argument, str(path), f"layer {name!r} has size {size}, this UNet's has {expected}",
                             "Use a LoRA trained for this model's architecture (e.g. SD 1.x vs SD 2.x)")


def _keys(path) -> list[str]:
    from conceptlab.validation import safetensors_header

    return [k for k in safetensors_header("lora", path) if k != "__metadata__"]


def load_lora(pipe, path: str | Path, adapter_name: str = "default", argument: str = "lora") -> None:
    lora_format(path, argument)
    check_lora_fits(pipe, path, argument)
    try:
        pipe.load_lora_weights(str(path), adapter_name=adapter_name)
    except (ValueError, KeyError) as e:  # diffusers cannot map the file's keys onto this pipeline
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise InputError(argument, str(path), f"cannot be loaded into this {type(pipe).__name__} ({reason})",
                         "Use a LoRA in diffusers or kohya format trained for this model family") from None


def convert_lora(path: str | Path, to: str, out: str | Path, pipe) -> Path:
    """Writes the LoRA at `path` in format `to` ('diffusers' or 'kohya'), via a pipeline of its architecture."""
    if to not in ("diffusers", "kohya"):
        raise InputError("--to", to, "unknown LoRA format", "Use diffusers or kohya")
    check_lora_values(path, "file")
    load_lora(pipe, path, argument="file")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("conceptlab", "{}"))
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        written = save_lora(pipe, tmp, meta)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written[to]), out)
    return Path(out)


def merge_lora(pipe, path: str | Path, out: str | Path, scale: float = 1.0) -> Path:
    """Fuses the LoRA into the weights and saves a plain pipeline folder."""
    from conceptlab.validation import SCALE

    SCALE.check("--scale", scale)
    check_lora_values(path, "file")
    load_lora(pipe, path, argument="file")
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()
    pipe.save_pretrained(out, safe_serialization=True)
    return Path(out)
