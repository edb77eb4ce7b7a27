"""Builds Stable Diffusion pipelines in code: tiny ones for tests, the base model's shape, and SD 1.5's shape.

Every pipeline is a real `StableDiffusionPipeline` (AutoencoderKL, UNet2DConditionModel with
cross-attention, CLIPTextModel, a CLIP-format BPE tokenizer), so it saves with `save_pretrained` and loads
back with `from_pretrained` like any hub model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from conceptlab.errors import InputError
from conceptlab.models.tokenizer import STICKER_TOKENIZER, sticker_tokenizer  # noqa: F401 - their old home


@dataclass(frozen=True)
class PipelineShape:
    """Layer sizes of a Stable Diffusion pipeline."""

    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 2  # diffusers' legacy `attention_head_dim` (= number of heads in SD 1.x)
    unet_norm_groups: int = 8
    vae_channels: tuple[int, ...] = (16, 32)  # len - 1 downsamplings: (16, 32) -> factor 2
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 8
    latent_channels: int = 4
    text_hidden: int = 32
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 64
    text_vocab_size: int = 0  # 0: the tokenizer's size; SD's 49408 for the real-scale shape
    image_size: int = 32
    prediction_type: str = "epsilon"  # or "v_prediction" (SD 2.x 768)


SHAPES: dict[str, PipelineShape] = {
    # seconds-fast on a CPU, for tests
    "tiny": PipelineShape(),
    # the shipped base model (see models/base.py): 64 px images, 16x16x8 latents (4 channels lost faces)
    "base": PipelineShape(
        unet_channels=(64, 128, 128), unet_layers_per_block=1, unet_heads=4, unet_norm_groups=32,
        vae_channels=(32, 64, 128), vae_layers_per_block=1, vae_norm_groups=16, latent_channels=8,
        text_hidden=128, text_layers=3, text_heads=4, text_intermediate=512, image_size=64,
    ),
    # Stable Diffusion 1.5's real layer sizes with random weights, for speed and memory at real scale
    "sd15": PipelineShape(
        unet_channels=(320, 640, 1280, 1280), unet_layers_per_block=2, unet_heads=8, unet_norm_groups=32,
        vae_channels=(128, 256, 512, 512), vae_layers_per_block=2, vae_norm_groups=32,
        text_hidden=768, text_layers=12, text_heads=12, text_intermediate=3072, text_vocab_size=49408,
        image_size=512,
    ),
}


def sd_scheduler_config(prediction_type: str = "epsilon", beta_end: float = 0.012) -> dict:
    """The noise schedule of Stable Diffusion 1.x/2.x (`beta_end` raised: less signal left at t=T)."""
    return dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=beta_end, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )


def build_unet(s: PipelineShape, cross_attention_dim: int) -> UNet2DConditionModel:
    n = len(s.unet_channels)
    down = ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1)
    factor = 2 ** (len(s.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=s.image_size // factor, in_channels=s.latent_channels, out_channels=s.latent_channels,
        block_out_channels=s.unet_channels, layers_per_block=s.unet_layers_per_block,
        down_block_types=tuple(down), up_block_types=tuple(up), cross_attention_dim=cross_attention_dim,
        attention_head_dim=s.unet_heads, norm_num_groups=s.unet_norm_groups,
    )


def build_vae(s: PipelineShape) -> AutoencoderKL:
    n = len(s.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=s.latent_channels, sample_size=s.image_size,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=s.vae_channels, layers_per_block=s.vae_layers_per_block,
        norm_num_groups=s.vae_norm_groups,
    )


def build_text_encoder(s: PipelineShape, vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=max(vocab_size, s.text_vocab_size), hidden_size=s.text_hidden,
        num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
        intermediate_size=s.text_intermediate, max_position_embeddings=77,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=s.text_hidden,
    )
    return CLIPTextModel(config)


def build_pipeline(shape: str | PipelineShape = "tiny", seed: int = 0, **overrides) -> StableDiffusionPipeline:
    """Returns a randomly initialised StableDiffusionPipeline of the named shape (or a PipelineShape).

    `overrides` replace fields of the shape, e.g. `prediction_type="v_prediction"`, `image_size=64`.
    """
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise InputError("shape", shape, "unknown pipeline shape", f"Use one of {sorted(SHAPES)}")
        shape = SHAPES[shape]
    s = replace(shape, **overrides)
    tokenizer = copy.deepcopy(sticker_tokenizer())  # pipelines add tokens; the cached one stays pristine
    torch.manual_seed(seed)
    text_encoder = build_text_encoder(s, len(tokenizer))
    unet = build_unet(s, s.text_hidden)
    vae = build_vae(s)
    scheduler = DDIMScheduler(**sd_scheduler_config(s.prediction_type))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass(frozen=True)
class SDXLShape:
    """Layer sizes of an SDXL pipeline: a three-level UNet with text-time conditioning and two text encoders."""

    unet_channels: tuple[int, ...] = (32, 64)
    transformer_layers: tuple[int, ...] = (0, 1)  # 0: a block without attention
    head_dim: tuple[int, ...] = (2, 4)
    layers_per_block: int = 1
    norm_groups: int = 8
    time_embed_dim: int = 8
    text: tuple[tuple[int, int, int, int], ...] = ((32, 2, 4, 64), (48, 2, 4, 96))  # (width, layers, heads, mlp)
    projection_dim: int = 32
    vae: PipelineShape = PipelineShape()
    image_size: int = 32


SDXL_SHAPES: dict[str, SDXLShape] = {
    # two encoders of different widths (32 and 48, as SDXL's are 768 and 1280), so nothing can mix them up
    "tiny": SDXLShape(),
    # SDXL 1.0's real layer sizes (2.57B-parameter UNet, CLIP-L and OpenCLIP-bigG) with random weights
    "sdxl": SDXLShape(unet_channels=(320, 640, 1280), transformer_layers=(0, 2, 10), head_dim=(5, 10, 20),
                      layers_per_block=2, norm_groups=32, time_embed_dim=256,
                      text=((768, 12, 12, 3072), (1280, 32, 20, 5120)), projection_dim=1280,
                      vae=SHAPES["sd15"], image_size=1024),
}


def build_sdxl_unet(s: SDXLShape) -> UNet2DConditionModel:
    """SDXL's UNet layout: attention-free first level, text-time added conditioning, linear projections."""
    down = tuple("CrossAttnDownBlock2D" if k else "DownBlock2D" for k in s.transformer_layers)
    up = tuple("CrossAttnUpBlock2D" if k else "UpBlock2D" for k in reversed(s.transformer_layers))
    factor = 2 ** (len(s.vae.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=s.image_size // factor, in_channels=4, out_channels=4, block_out_channels=s.unet_channels,
        layers_per_block=s.layers_per_block, down_block_types=down, up_block_types=up,
        attention_head_dim=s.head_dim, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=s.time_embed_dim,
        transformer_layers_per_block=tuple(max(1, k) for k in s.transformer_layers),
        cross_attention_dim=sum(w for w, *_ in s.text),
        projection_class_embeddings_input_dim=s.time_embed_dim * 6 + s.projection_dim, norm_num_groups=s.norm_groups,
    )


def build_sdxl_text_encoders(s: SDXLShape, vocab_size: int):
    """(CLIPTextModel, CLIPTextModelWithProjection): the second one's projected pooled output conditions SDXL."""
    from transformers import CLIPTextModelWithProjection

    def config(width, layers, heads, mlp):
        return CLIPTextConfig(vocab_size=max(vocab_size, s.vae.text_vocab_size), hidden_size=width,
                              num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp,
                              max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                              projection_dim=s.projection_dim)

    return CLIPTextModel(config(*s.text[0])), CLIPTextModelWithProjection(config(*s.text[1]))


def build_sdxl_pipeline(seed: int = 0, shape: str = "tiny"):
    """A StableDiffusionXLPipeline of the named shape with random weights: "tiny" for tests (encoders 32 and
    48 wide), "sdxl" for speed and memory at SDXL's real sizes."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    if shape not in SDXL_SHAPES:
        raise InputError("shape", shape, "unknown SDXL shape", f"Use one of {sorted(SDXL_SHAPES)}")
    s = SDXL_SHAPES[shape]
    tokenizer = copy.deepcopy(sticker_tokenizer())
    torch.manual_seed(seed)
    unet = build_sdxl_unet(s)
    text_encoder, text_encoder_2 = build_sdxl_text_encoders(s, len(tokenizer))
    pipe = StableDiffusionXLPipeline(
        vae=build_vae(s.vae), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=copy.deepcopy(tokenizer), unet=unet,
        scheduler=EulerDiscreteScheduler(**{k: v for k, v in sd_scheduler_config().items()
                                            if k not in ("clip_sample", "set_alpha_to_one")}),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
