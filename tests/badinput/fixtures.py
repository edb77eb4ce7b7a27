"""Bad files for the bad-input corpus, made by the tests (nothing here is committed as a binary)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

MARKER = "PWNED-MARKER"  # a malicious pickle would create this file if it were ever unpickled


class _Payload:
    """Unpickling this runs `touch MARKER`: what an attacker's .pt would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _png_bomb(path: Path, side: int = 60_000) -> None:
    """A valid PNG header claiming side x side pixels (3.6 gigapixels) in a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * (side // 8)
    body = zlib.compress(row * 64)  # only the first rows; the decoder would still allocate for all of them
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _good_png(size: int = 32, colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def make_images(f: Path) -> None:
    png = _good_png()
    (f / "good.png").write_bytes(png)
    (f / "truncated.png").write_bytes(png[: len(png) // 2])
    (f / "empty.png").write_bytes(b"")
    (f / "text.png").write_text("this is not an image\n")
    _png_bomb(f / "bomb.png")
    for name, data in (("broken", png[: len(png) // 2]), ("zero", b"")):  # folders of only unreadable images
        (f / name).mkdir()
        (f / name / "a.png").write_bytes(data)
    (f / "emptydir").mkdir()
    (f / "textdir").mkdir()
    (f / "textdir" / "notes.txt").write_text("no pictures here")
    (f / "imgs").mkdir()  # three readable pictures: a valid folder for cases that break something else
    for k in range(3):
        (f / "imgs" / f"{k}.png").write_bytes(_good_png(colour=(40 * k, 120, 200)))
    (f / "out-file").write_text("an existing file where a folder is expected\n")
    (f / "a-dir").mkdir()


def make_embeddings(f: Path) -> None:
    vec = torch.randn(1, 32)
    save_file({"<good>": vec}, str(f / "good.safetensors"))
    data = (f / "good.safetensors").read_bytes()
    (f / "trunc.safetensors").write_bytes(data[: len(data) - 40])
    (f / "garbage.safetensors").write_bytes(struct.pack("<Q", 40) + b"{this is not json at all!!!}" + b"\x00" * 40)
    (f / "huge-header.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    torch.save({"a": torch.ones(2)}, f / "pickle.safetensors")  # a torch pickle renamed
    save_file({"<nan>": torch.full((1, 32), float("nan"))}, str(f / "nan.safetensors"))
    save_file({"<zero>": torch.tensor(1.0)}, str(f / "zero-d.safetensors"))
    save_file({"<int>": torch.ones(1, 32, dtype=torch.int64)}, str(f / "int.safetensors"))
    save_file({"a": torch.ones(1, 32), "b": torch.ones(1, 32)}, str(f / "two.safetensors"))
    save_file({"broccoli": torch.randn(1, 32)}, str(f / "realword.safetensors"))
    save_file({"<wide>": torch.randn(1, 1024)}, str(f / "wide.safetensors"))
    save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}, str(f / "sdxl.safetensors"))
    save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.tensor(2.0)}, str(f / "sdxl-0d.safetensors"))
    torch.save({"string_to_param": {"x": torch.randn(1, 32)}, "name": "<a>"}, f / "a1111-nostar.pt")
    torch.save({"string_to_param": {"*": "not a tensor"}, "name": "<a>"}, f / "a1111-string.pt")
    torch.save({"string_to_param": {"*": torch.tensor(3.0)}, "name": "<a>"}, f / "a1111-0d.pt")
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}, "name": "<a>", "conceptlab_meta": "{bad json"},
               f / "a1111-badmeta.pt")
    torch.save({"string_to_param": {"*": _Payload(f / MARKER)}}, f / "evil.pt")
    pt = (f / "a1111-0d.pt").read_bytes()
    (f / "trunc.pt").write_bytes(pt[: len(pt) // 2])
    np.save(f / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(f / "ints.npy", np.ones((1, 32), dtype=np.int32))
    (f / "trunc.npy").write_bytes((f / "ints.npy").read_bytes()[:60])
    # a LoRA file offered as an embedding, an embedding offered as a LoRA
    save_file({"unet.down.0.to_q.lora_A.weight": torch.randn(4, 32)}, str(f / "lora.safetensors"))
    save_file({"lora_unet_x.lora_down.weight": torch.full((4, 32), float("nan"))}, str(f / "lora-nan.safetensors"))


def make_configs(f: Path) -> None:
    (f / "malformed.json").write_text('{"steps": 3,,}')
    (f / "list.json").write_text("[1, 2, 3]")
    (f / "string.json").write_text('"steps"')
    (f / "wrongtype.json").write_text(json.dumps({"steps": "ten"}))
    (f / "unknown.json").write_text(json.dumps({"stepz": 3}))
    (f / "nan.json").write_text('{"guidance": NaN}')
    (f / "bool.json").write_text(json.dumps({"steps": True}))
    (f / "ti-wrongtype.json").write_text(json.dumps({"train": {"steps": "ten"}}))
    (f / "ti-unknown.json").write_text(json.dumps({"train": {"stepz": 3}}))
    (f / "ti-concepts-string.json").write_text(json.dumps({"concepts": "<a>=imgs"}))
    (f / "ti-concept-nofolder.json").write_text(json.dumps({"concepts": [{"token": "<a>"}]}))
    (f / "ti-train-string.json").write_text(json.dumps({"train": "fast"}))
    (f / "ti-lr-string.json").write_text(json.dumps({"train": {"lr": "high"}}))
    (f / "db-subjects-dict.json").write_text(json.dumps({"subjects": {"identifier": "x"}}))
    (f / "base-unknown.json").write_text(json.dumps({"unet_stepz": 3}))
    (f / "base-wrongtype.json").write_text(json.dumps({"unet_steps": "many"}))
    (f / "binary.json").write_bytes(b"\xff\xfe\x00\x01")
    (f / "bad.toml").write_text("steps = = 3\n")


def make_metadata(f: Path) -> None:
    for name, lines in (
        ("meta-malformed", ['{"file_name": "0.png", "emotion": "happy"}', "{not json"]),
        ("meta-nofile", ['{"emotion": "happy"}', '{"emotion": "sad"}']),
        ("meta-nolabel", ['{"file_name": "0.png", "emotion": "happy"}', '{"file_name": "1.png"}']),
        ("meta-list", ['["0.png", "happy"]']),
    ):
        folder = f / name
        folder.mkdir()
        for k in range(2):
            (folder / f"{k}.png").write_bytes(_good_png(colour=(100 * k, 50, 50)))
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    gen = f / "gens"  # generations.jsonl with a broken row, for classify eval
    gen.mkdir()
    (gen / "0.png").write_bytes(_good_png())
    (gen / "generations.jsonl").write_text('{"file": "0.png", "prompt": "a happy star"}\nnot json\n')


def make_model_dirs(f: Path) -> None:
    noweights = f / "model-noweights"
    (noweights / "unet").mkdir(parents=True)
    (noweights / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                            "unet": ["diffusers", "UNet2DConditionModel"]}))
    (noweights / "unet" / "config.json").write_text("{}")
    (f / "clf-empty").mkdir()
    clf = f / "clf-noweights"
    clf.mkdir()
    (clf / "conceptlab_classifier.json").write_text(json.dumps({"label": "emotion", "classes": ["happy", "sad"]}))
    for name, cls in (("model-sd3", "StableDiffusion3Pipeline"), ("model-flux", "FluxPipeline")):
        (f / name).mkdir()  # families conceptlab has no adapter for: refused by name before any weights load
        (f / name / "model_index.json").write_text(json.dumps({"_class_name": cls,
                                                               "transformer": ["diffusers", "SomeTransformer"]}))
    # a single-file SDXL checkpoint (its second text encoder's keys give it away) with no configs in the cache
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.ones(4),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)},
              str(f / "sdxl-single.safetensors"))
    # a kohya SDXL LoRA for the second text encoder only
    save_file({"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(4, 48),
               "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(48, 4)},
              str(f / "lora-sdxl-te2.safetensors"))
    clf_bad = f / "clf-badjson"
    clf_bad.mkdir()
    (clf_bad / "conceptlab_classifier.json").write_text("{oops")


def build_all(f: Path) -> Path:
    f.mkdir(parents=True, exist_ok=True)
    for make in (make_images, make_embeddings, make_configs, make_metadata, make_model_dirs):
        make(f)
    return f
