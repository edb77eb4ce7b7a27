"""Image metrics: CLIP-T, CLIP-I and DINO as the DreamBooth paper defines them, PSNR and SSIM with masks.

CLIP-T: mean cosine similarity between a generated image's CLIP embedding and its prompt's.
CLIP-I: mean pairwise cosine similarity between CLIP embeddings of generated and real images.
DINO:   the same with a self-supervised ViT's CLS embedding (ViT-S/16 in Ruiz et al. 2023, arXiv 2208.12242).
Raw cosines are returned; the literature reports CLIP-T x100 (`x100` helper), CLIP-I and DINO as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor in transformers 4 and an output with projected pooler_output in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _pairwise_mean(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return float((a @ b.T).mean())


@dataclass
class ClipScorer:
    """CLIP-T and CLIP-I with a transformers CLIPModel (local path or hub id) and its processor."""

    model: object
    processor: object

    @classmethod
    def load(cls, name_or_path: str) -> ClipScorer:
        from transformers import CLIPModel, CLIPProcessor

        return cls(CLIPModel.from_pretrained(name_or_path).eval(), CLIPProcessor.from_pretrained(name_or_path))

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return _features(self.model.get_image_features(pixel_values=pixels))  # (N, D)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        tok = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        return _features(self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))

    def clip_t(self, images: list[Image.Image], prompts: list[str]) -> float:
        """Mean over images of cos(image_i, prompt_i)."""
        a, b = F.normalize(self.image_embeddings(images), dim=-1), F.normalize(self.text_embeddings(prompts), dim=-1)
        return float((a * b).sum(-1).mean())

    def clip_i(self, generated: list[Image.Image], real: list[Image.Image]) -> float:
        return _pairwise_mean(self.image_embeddings(generated), self.image_embeddings(real))


@dataclass
class DinoScorer:
    """DINO score: mean pairwise cosine of ViT CLS embeddings (e.g. facebook/dino-vits16)."""

    model: object
    processor: object

    @classmethod
    def load(cls, name_or_path: str) -> DinoScorer:
        from transformers import AutoImageProcessor, AutoModel

        return cls(AutoModel.from_pretrained(name_or_path).eval(), AutoImageProcessor.from_pretrained(name_or_path))

    @torch.no_grad()
    def embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]  # (N, D): the CLS token

    def dino(self, generated: list[Image.Image], real: list[Image.Image]) -> float:
        return _pairwise_mean(self.embeddings(generated), self.embeddings(real))


def load_scorer(kind: str, path: str, flag: str | None = None):
    """A ClipScorer ("clip") or DinoScorer ("dino") from a local folder; InputError naming `flag` (default
    --clip-model, --dino-model) for one that is not."""
    from conceptlab.errors import InputError
    from conceptlab.validation import input_dir

    flag = flag or ("--clip-model" if kind == "clip" else "--dino-model")
    input_dir(flag, path, "model folder")
    try:
        return (ClipScorer if kind == "clip" else DinoScorer).load(str(path))
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise InputError(flag, path, f"cannot be loaded ({type(e).__name__}: {first})",
                         "Pass a folder saved with save_pretrained, holding the model and its processor") from None


def x100(value: float) -> float:
    """The scale CLIP-T is usually reported in (cosine x 100)."""
    return 100.0 * value


def _as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def psnr(a: Image.Image, b: Image.Image, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the pixels where `mask` (H, W) is true (all if None)."""
    x, y = _as_array(a), _as_array(b)
    err = (x - y) ** 2  # (H, W, 3)
    if mask is not None:
        err = err[mask.astype(bool)]
    mse = float(err.mean()) if err.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def ssim(a: Image.Image, b: Image.Image, mask: np.ndarray | None = None, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) on grey levels with a uniform window, averaged over `mask`."""
    from scipy.ndimage import uniform_filter

    x = np.asarray(a.convert("L"), dtype=np.float64) / 255.0
    y = np.asarray(b.convert("L"), dtype=np.float64) / 255.0
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = uniform_filter(x, window), uniform_filter(y, window)
    vx = uniform_filter(x * x, window) - mx * mx
    vy = uniform_filter(y * y, window) - my * my
    cxy = uniform_filter(x * y, window) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))  # (H, W)
    return float(s[mask.astype(bool)].mean() if mask is not None else s.mean())


def box_mask(size: tuple[int, int], bbox: tuple[int, int, int, int], margin: int = 0) -> np.ndarray:
    """(H, W) boolean mask that is true inside `bbox` (x0, y0, x1, y1) grown by `margin` pixels."""
    w, h = size
    mask = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = bbox
    mask[max(0, y0 - margin):min(h, y1 + margin), max(0, x0 - margin):min(w, x1 + margin)] = True
    return mask
