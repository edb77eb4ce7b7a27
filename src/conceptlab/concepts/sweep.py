"""An interpolation strip: the same prompt and seed, the mixed concept from 0% to 100% of the second."""

from __future__ import annotations

from pathlib import Path

from conceptlab.concepts.formats import Embedding
from conceptlab.concepts.mixing import mix_embeddings
from conceptlab.concepts.tokens import load_concepts
from conceptlab.errors import InputError


def render_sweep(model, embeddings: list[Embedding], ts: list[float], method: str, prompt: str, seed: int,
                 steps: int, out: Path, n_seeds: int = 2) -> Path:
    """Writes sweep.png: one column per t (share of the second concept), one row per seed."""
    from conceptlab.imaging import make_grid
    from conceptlab.models.loading import load_pipeline

    if len(embeddings) != 2:
        raise InputError("--sweep", ts, "needs exactly two concepts", "Pass two embedding files")
    if any(not 0 <= t <= 1 for t in ts):
        raise InputError("--sweep", ts, "values must be within [0, 1]", "e.g. --sweep 0,0.25,0.5,0.75,1")
    if "{}" not in prompt:
        raise InputError("--prompt", prompt, "has no {} for the mixed token", "e.g. --prompt 'a sticker of a {}'")
    pipe = load_pipeline(model) if not hasattr(model, "unet") else model
    mixes = [mix_embeddings(embeddings, [1 - t, t], f"<sweep-{i}>", method) for i, t in enumerate(ts)]
    load_concepts(pipe, mixes)
    from conceptlab.generation.generate import seeded_generators

    images = []
    for s in range(n_seeds):
        prompts = [prompt.format(m.token) for m in mixes]
        gens = seeded_generators([seed + s] * len(mixes))
        images += pipe(prompts, num_inference_steps=steps, generator=gens).images
    path = Path(out) / "sweep.png"
    make_grid(images, cols=len(ts), labels=[f"{t:.0%}" for t in ts] * n_seeds, scale=2).save(path)
    return path
