"""edit(): Prompt-to-Prompt on any SD 1.x/2.x/SDXL pipeline - word swap, refinement, re-weighting, local blend."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch

from conceptlab.editing.alignment import encoded, refine_alignment, replace_mapper, swapped_words, token_positions
from conceptlab.editing.controllers import AttentionEdit, AttentionStore, DiffBlend, LocalBlend, MaskBlend
from conceptlab.editing.inversion import ddim_sampler, follow_trajectory, negative_kwargs, swap_uncond
from conceptlab.editing.processor import controlled
from conceptlab.editing.text_weights import weighted_prompt_inputs
from conceptlab.errors import InputError

MODES = ("auto", "replace", "refine")
BLEND_MASKS = {"attention": (0.3, 0.2), "difference": (0.4, 0.3)}  # mask kind -> default (threshold, start)


@dataclass
class EditConfig:
    """Settings of one edit; returned with its images."""

    source: str
    targets: list[str]
    mode: str = "auto"  # auto: replace for one-for-one swaps, refine otherwise
    cross_steps: float | dict = 0.8  # fraction of steps whose cross-attention comes from the source
    self_steps: float = 0.4  # fraction of steps whose self-attention comes from the source
    reweight: dict[str, float] = field(default_factory=dict)  # word -> scale (applied to every target)
    reweight_text: bool = True  # also scale the word's share of the other tokens' text states (text_weights)
    blend: list[str] = field(default_factory=list)  # words whose region may change (local blend)
    blend_mask: str = "attention"  # attention: the blend words' maps; difference: where the latents drift apart
    blend_threshold: float | None = None  # share of the mask's range; default 0.3 (attention), 0.4 (difference)
    blend_start: float | None = None  # fraction of steps before blending starts; default 0.2 (attention), 0.3 (difference)
    mask: str | None = None  # a picture of where the image may change (white); the rest is kept (start default 0)
    mask_noise: float = 0.0  # share of fresh noise the targets start from inside the mask (1: their own layout there)
    mask_paste: float | None = None  # px: after decoding, the source's pixels outside the mask, the seam this soft
    seed: int = 0
    steps: int = 30
    guidance: float = 7.5
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None


@dataclass
class EditResult:
    images: list  # source first, then one per target
    config: EditConfig
    mode: str
    mask: torch.Tensor | None = None

    def settings(self) -> dict:
        return {**asdict(self.config), "mode_used": self.mode}


def check_edit(cfg: EditConfig) -> None:
    """Raises InputError for any bad setting, before anything is computed."""
    from conceptlab.validation import FEATHER, GUIDANCE, SAMPLING_STEPS, SEED, WEIGHT, text

    text("--prompt", cfg.source, example="'a sticker of a happy star'")
    for target in cfg.targets:
        text("--to", target, example="'a sticker of a sad star'")
    SAMPLING_STEPS.check("--steps", cfg.steps)
    GUIDANCE.check("--guidance", cfg.guidance)
    SEED.check("--seed", cfg.seed)
    for word, weight in cfg.reweight.items():
        WEIGHT.check(f"--reweight {word}", weight)
    if cfg.mode not in MODES:
        raise InputError("--mode", cfg.mode, "unknown edit mode", f"Use one of {MODES}")
    if not cfg.targets:
        raise InputError("--to", None, "no target prompt", "Give at least one --to prompt")
    if cfg.blend_mask not in BLEND_MASKS:
        raise InputError("--blend-mask", cfg.blend_mask, "unknown blend mask", f"Use one of {tuple(BLEND_MASKS)}")
    if cfg.blend_mask == "difference" and cfg.blend:
        raise InputError("--blend", ",".join(cfg.blend), "the difference mask needs no words",
                         "Drop --blend, or use --blend-mask attention to blend by the words' attention")
    if cfg.mask is not None:
        if cfg.blend or cfg.blend_mask == "difference":
            raise InputError("--mask", cfg.mask, f"and --blend{'' if cfg.blend else '-mask difference'} both say where "
                             "the image may change", "Give one of them")
        load_region(cfg.mask)
    if cfg.mask_noise and cfg.mask is None:
        raise InputError("--mask-noise", cfg.mask_noise, "fresh noise goes inside a drawn --mask, and none is given",
                         "Give --mask FILE, or drop --mask-noise")
    if cfg.mask_paste is not None:
        if cfg.mask is None:
            raise InputError("--mask-paste", cfg.mask_paste, "pastes the source outside a drawn --mask, and none is "
                             "given", "Give --mask FILE, or drop --mask-paste")
        FEATHER.check("--mask-paste", cfg.mask_paste)
    for name in ("self_steps", "blend_threshold", "blend_start", "mask_noise"):
        v = getattr(cfg, name)
        if v is not None and not 0 <= v <= 1:
            raise InputError(f"--{name.replace('_', '-')}", v, "must be within [0, 1]", "Use a fraction such as 0.4")
    fracs = cfg.cross_steps.values() if isinstance(cfg.cross_steps, dict) else [cfg.cross_steps]
    if any(not 0 <= f <= 1 for f in fracs):
        raise InputError("--cross-steps", cfg.cross_steps, "must be within [0, 1]", "Use a fraction such as 0.8")


def save_region(mask, path) -> str:
    """Writes a (H, W) bool region as the mask picture load_region reads (white: may change); returns its path."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L").save(path)
    return str(path)


def load_region(path: str) -> torch.Tensor:
    """(1, 1, H, W) in [0, 1] of a mask picture: its brightness, 1 (white) where the edit may change the image."""
    from PIL import Image

    from conceptlab.imaging import open_rgb

    try:
        grey = open_rgb(path).convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError("--mask", path, f"is not a readable picture ({e})",
                         "Give a PNG or JPEG, white where the image may change, black where it is kept") from None
    region = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).float().div(255)
    region = region.reshape(1, 1, grey.height, grey.width)
    if not (region > 0.5).any():
        raise InputError("--mask", path, "has no white (bright) part: it lets nothing change",
                         "Paint white where the image may change")
    return region


def check_learned_tokens(pipe, cfg: EditConfig) -> None:
    """Raises InputError for a '<token>' the pipeline has not learned (its embedding was not loaded), which the
    tokenizer would otherwise spell out letter by letter."""
    import re

    vocab = pipe.tokenizer.get_vocab()
    for argument, prompt in [("--prompt", cfg.source)] + [("--to", t) for t in cfg.targets]:
        for token in re.findall(r"<[^<>\s]+>", prompt):
            if token not in vocab:
                raise InputError(argument, prompt, f"{token} is not a token this model has learned",
                                 "Pass its embedding with --concepts (a file or a `train ti` folder)")


def choose_mode(cfg: EditConfig) -> str:
    """'replace' when every target swaps words one for one with the source, else 'refine'."""
    if cfg.mode != "auto":
        return cfg.mode
    return "replace" if all(swapped_words(cfg.source, t) is not None for t in cfg.targets) else "refine"


def _cross_schedule(cfg: EditConfig, tokenizer, target: str):
    if not isinstance(cfg.cross_steps, dict):
        return cfg.cross_steps
    out = {"default_": cfg.cross_steps.get("default_", 1.0)}
    for word, frac in cfg.cross_steps.items():
        if word != "default_":
            out[tuple(token_positions(tokenizer, target, word, "--cross-steps"))] = frac
    return out


def build_controller(pipe, cfg: EditConfig, latent_hw: tuple[int, int]) -> tuple[AttentionEdit, str]:
    tok, n = pipe.tokenizer, 1 + len(cfg.targets)
    mode = choose_mode(cfg)
    # token positions come from the prompts as encoded, so learned multi-vector tokens line up
    source, targets = encoded(pipe, cfg.source), [encoded(pipe, t) for t in cfg.targets]
    if mode == "replace":
        mapper = torch.stack([replace_mapper(tok, source, t) for t in targets])  # (n-1, T, T)
        alphas = None
    else:
        pairs = [refine_alignment(tok, source, t) for t in targets]
        mapper, alphas = torch.stack([m for m, _ in pairs]), torch.stack([a for _, a in pairs])
    reweight = None
    if cfg.reweight:
        reweight = torch.ones(n - 1, 77)
        for k, t in enumerate(targets):
            for word, scale in cfg.reweight.items():
                reweight[k, token_positions(tok, t, word)] = scale
    blend = None
    threshold, start = (d if v is None else v for v, d in zip((cfg.blend_threshold, cfg.blend_start),
                                                               BLEND_MASKS[cfg.blend_mask]))
    if cfg.blend_mask == "difference":
        blend = DiffBlend(threshold, start)
    if cfg.mask is not None:
        blend = MaskBlend(load_region(cfg.mask), cfg.blend_start or 0.0)
    if cfg.blend:
        words = torch.zeros(n, 77)
        for k, prompt in enumerate([source, *targets]):
            for word in cfg.blend:
                for w in word.split():
                    try:
                        words[k, token_positions(tok, prompt, w, "--blend")] = 1
                    except InputError:
                        if not any(w.lower() in p.lower().split() for p in [cfg.source, *cfg.targets]):
                            raise
        blend = LocalBlend(words, latent_hw, threshold, start)
    # self-attention is replaced in maps of at most 16x16 at SD's 64x64 latents (as Hertz et al.), and in
    # every map of small latents; larger maps keep the fused kernel
    self_max = max(256, latent_hw[0] * latent_hw[1] // 16)
    controller = AttentionEdit(cfg.steps, n, mode, mapper, alphas, _cross_schedule(cfg, tok, targets[0]), cfg.self_steps,
                               reweight, blend, self_max_pixels=self_max, guidance=cfg.guidance > 1)
    return controller, mode


def shared_latents(pipe, n: int, seed: int, height: int, width: int) -> torch.Tensor:
    """One noise tensor for every prompt: the edits start from the source's exact starting point."""
    c = pipe.unet.config.in_channels
    f = pipe.vae_scale_factor
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, c, height // f, width // f), generator=g, dtype=pipe.unet.dtype)
    return noise.expand(n, -1, -1, -1).clone()


def edit(pipe, source: str, targets: list[str] | str, latents: torch.Tensor | None = None, inversion=None,
         **settings) -> EditResult:
    """Generates `source` and its edits `targets` from the same noise; returns all images and the settings.

    With `inversion` (editing.inversion.invert of a real image under `source`), every prompt starts from the
    image's inverted noise and uses its per-step unconditional embeddings, with its steps and guidance; a Direct
    Inversion puts the source branch back on the inversion's trajectory after every step.
    """
    from conceptlab.models.families import require_family

    require_family(pipe, "Prompt-to-Prompt editing", ("sd1", "sd2", "sdxl"))
    if inversion is not None:
        settings["steps"] = inversion.steps
        if inversion.guided:
            settings["guidance"] = inversion.guidance
    cfg = EditConfig(source=source, targets=[targets] if isinstance(targets, str) else list(targets), **settings)
    check_edit(cfg)
    check_learned_tokens(pipe, cfg)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    height, width = cfg.height or size, cfg.width or size
    n = 1 + len(cfg.targets)
    extra = {"negative_prompt": [cfg.negative_prompt] * n} if cfg.negative_prompt else {}
    if inversion is not None:
        latents = inversion.latent.expand(n, -1, -1, -1).clone()
        if inversion.uncond is not None:
            extra = negative_kwargs(inversion, n)
    if latents is None:
        latents = shared_latents(pipe, n, cfg.seed, height, width)
    controller, mode = build_controller(pipe, cfg, (latents.shape[2], latents.shape[3]))
    if cfg.mask_noise:
        latents = renoised(latents, controller.blend.mask(latents), cfg.mask_noise, cfg.seed)
    sampler = ddim_sampler(pipe) if inversion is not None else contextlib.nullcontext()
    with sampler, controlled(pipe.unet, controller):
        images = pipe(**_prompt_inputs(pipe, cfg), num_inference_steps=cfg.steps, guidance_scale=cfg.guidance,
                      height=height, width=width, latents=latents, callback_on_step_end=_step_end(controller, inversion, n),
                      callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], **extra).images
    if cfg.mask_paste is not None:
        images = [images[0]] + [pasted(images[0], im, controller.blend.region, cfg.mask_paste) for im in images[1:]]
    mask = controller.blend.last_mask if controller.blend is not None else None
    return EditResult(images, cfg, mode, mask)


def pasted(source, edited, region: torch.Tensor, feather: float):
    """`edited` inside `region` (1, 1, H, W), `source` outside it, the seam blurred over `feather` px: Blended Latent
    Diffusion's background step (Avrahami et al. 2023). Blending latents alone keeps neither side clean: the decoder
    draws each pixel from a neighbourhood of latents, so the source's colours leak in and the outside is not exact."""
    import numpy as np
    from PIL import Image, ImageFilter

    size = edited.size  # (W, H)
    inside = torch.nn.functional.interpolate(region.float(), size=size[::-1], mode="bilinear")[0, 0] > 0.5  # (H, W)
    alpha = Image.fromarray(inside.numpy().astype(np.uint8) * 255, mode="L")
    if feather > 0:
        alpha = alpha.filter(ImageFilter.GaussianBlur(feather))
    return Image.composite(edited.convert("RGB"), source.convert("RGB"), alpha)


def renoised(latents: torch.Tensor, region: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """Starting latents (n, C, h, w) with `share` of fresh noise (seed + 1) mixed in where region (n, 1, h, w) is 1,
    as sqrt(1 - share) z + sqrt(share) e (unit variance kept): there the targets draw their own layout instead of the
    source's (the inverted latents fix where a face's marks go), as Blended Latent Diffusion starts from fresh noise."""
    g = torch.Generator().manual_seed(seed + 1)
    fresh = torch.randn(latents.shape[1:], generator=g, dtype=torch.float32).to(latents.device, latents.dtype)
    mixed = (1 - share) ** 0.5 * latents + share ** 0.5 * fresh  # (n, C, h, w): one fresh draw for every target
    return torch.where(region > 0.5, mixed, latents)


def _prompt_inputs(pipe, cfg: EditConfig) -> dict:
    """The prompts as text, or as embeddings when re-weighted words also scale their share of the text states."""
    prompts = [cfg.source, *cfg.targets]
    if not (cfg.reweight and cfg.reweight_text):
        return {"prompt": prompts}
    weights = [{}] + [cfg.reweight] * len(cfg.targets)  # the source is never re-weighted
    return weighted_prompt_inputs(pipe, prompts, weights)


def _step_end(controller, inversion=None, n: int = 1):
    """After each step: Direct Inversion's source correction, the controller's step (local blend, which keeps the
    corrected source outside its mask, as Ju et al.'s code orders them), then the inversion's next null-text
    embedding."""

    def callback(pipe, step, timestep, kwargs):
        if inversion is not None:
            follow_trajectory(kwargs, inversion, step)
        kwargs["latents"] = controller.step_end(kwargs["latents"])
        if inversion is not None:
            swap_uncond(kwargs, inversion, step, n)
        return kwargs

    return callback


def attention_maps(pipe, prompt: str, seed: int = 0, steps: int = 30, guidance: float = 7.5):
    """The generated image and its per-token cross-attention maps averaged over steps and layers.

    Returns (image, tokens, maps) with maps (T_prompt, h, w) at the largest map size of the UNet.
    """
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    store = AttentionStore(steps, 1, guidance=guidance > 1)
    latents = shared_latents(pipe, 1, seed, size, size)
    with controlled(pipe.unet, store):
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, latents=latents,
                     callback_on_step_end=_step_end(store)).images[0]
    ids = pipe.tokenizer(prompt).input_ids
    tokens = pipe.tokenizer.convert_ids_to_tokens(ids)[1:-1]
    h = w = pipe.unet.config.sample_size
    combined = 0
    for pixels in store.maps:
        m = store.averaged(pixels)[0]  # (P, T)
        side = int(round(pixels ** 0.5))
        grid = m.T.reshape(-1, 1, side, side)
        combined = combined + torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear")[:, 0]
    maps = combined[1:1 + len(tokens)] / len(store.maps)
    return image, [t.replace("</w>", "") for t in tokens], maps
