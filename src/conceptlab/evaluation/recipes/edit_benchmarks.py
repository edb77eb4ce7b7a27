"""The editing benchmark of scripts/edit_proof.py: fixed, seeded edit cases on a model, each judged.

- swap_benchmark: word swaps (object; held item) on generations, scored by editing.score_swap;
- real_swap_benchmark: the same on rendered stickers (negative-prompt inversion), PSNR outside the known box;
- global_edit_benchmark: style and background edits, the new style / scene judged, object and colour kept;
- reweight_benchmark: 'happy' re-weighted, the share judged happy per scale;
- inversion_benchmark: rendered stickers inverted (null-text, negative-prompt; encoder's or refined latent),
  reconstruction PSNR beside the VAE round trip's.
Each writes its grid into `out` and returns {"summary": ..., "rows": ...} (reweight: its shares).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from conceptlab.evaluation.recipes.editing import PSNR_CAP, score_swap, summarize_swaps

OBJECTS = ("apple", "star", "cat", "fish", "cloud", "emoji")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
SCENE_WORDS = {"beach": "at the beach", "jungle": "in the jungle", "desert": "in the desert",
               "snowy mountain": "on a snowy mountain", "river": "by a river"}
ITEMS = ("burger", "cake", "ice cream")
# global edits (style, scene): the source's maps fix the layout for the first fifth of the steps only (swept on
# the v2 base model: background 0.6/0.3 -> 58%, 0.2/0.2 -> 92%; style 0.4/0.3 -> 67%, 0.2/0.2 -> 88%)
GLOBAL_EDIT = {"cross_steps": 0.2, "self_steps": 0.2}


def swap_cases(rng: random.Random, n: int):
    """(kind, source, target, old word, new word, the source's sticker attributes) per case."""
    cases = []
    for k in range(n):
        colour, scene = rng.choice(COLOURS), rng.choice(list(SCENE_WORDS))
        if k % 3 == 2:  # held item
            obj = rng.choice(OBJECTS)
            a, b = rng.sample(ITEMS, 2)
            art = lambda w: "an" if w[0] in "aeiou" else "a"  # noqa: E731
            src = f"a sticker of a {colour} {obj} holding {art(a)} {a} {SCENE_WORDS[scene]}"
            tgt = f"a sticker of a {colour} {obj} holding {art(b)} {b} {SCENE_WORDS[scene]}"
            cases.append(("held_item", src, tgt, a, b,
                          {"object": obj, "colour": colour, "background": scene, "held_item": a}))
        else:
            a, b = rng.sample(OBJECTS, 2)
            cases.append(("object", f"a sticker of a {colour} {a} {SCENE_WORDS[scene]}",
                          f"a sticker of a {colour} {b} {SCENE_WORDS[scene]}", a, b,
                          {"object": a, "colour": colour, "background": scene}))
    return cases


def blend_settings(blend: str, a: str, b: str) -> dict:
    """edit() keywords of a local blend: 'attention' on the two swapped words, 'difference', or 'none'."""
    return {"attention": {"blend": [a, b]}, "difference": {"blend_mask": "difference"}, "none": {}}[blend]


def swap_benchmark(pipe, judge, n: int, out: Path, blend: str = "difference") -> dict:
    """`n` generated swaps (cases from random.Random(0), seed k for case k), scored; writes out/swap.png."""
    from conceptlab.editing.edit import edit
    from conceptlab.imaging import make_grid

    rows, grid = [], []
    for k, (head, src, tgt, a, b, _) in enumerate(swap_cases(random.Random(0), n)):
        source, edited = edit(pipe, src, tgt, seed=k, **blend_settings(blend, a, b)).images
        row, _, naive = score_swap(pipe, judge, head, src, tgt, a, b, k, source, edited)
        rows.append(row)
        grid += [source, edited, naive]
    make_grid(grid[:36], cols=6, scale=2).save(Path(out) / "swap.png")
    return {"summary": summarize_swaps(rows, ("object", "held_item")), "rows": rows}


def real_swap_cases(n: int, size: int) -> list:
    """(kind, source, target, old word, new word, render) of the real swaps' first `n` cases: swap_cases of
    random.Random(3), case k's sticker rendered at `size` px from seed 7000 + k (its .image and .bbox)."""
    from conceptlab.world import StickerSpec, render

    return [(head, src, tgt, a, b, render(StickerSpec(**spec, seed=7000 + k), size))
            for k, (head, src, tgt, a, b, spec) in enumerate(swap_cases(random.Random(3), n))]


def score_real_edit(judge, head: str, new: str, reference, edited, bbox) -> dict:
    """The real swaps' measure of one edit: {"new": the judge's `head` reads `new` in `edited`, "psnr_out": PSNR
    against `reference` outside `bbox` grown by 6 px, "outside_share": that region's share of the image}."""
    from conceptlab.evaluation.metrics import box_mask, psnr

    outside = ~box_mask(edited.size, bbox, margin=6)  # (H, W) bool
    return {"new": judge.predict([edited])[head][0] == new, "psnr_out": psnr(reference, edited, outside),
            "outside_share": float(outside.mean())}


def real_swap_benchmark(pipe, judge, n: int, out: Path, blend: str = "difference") -> dict:
    """Object and held-item swaps on rendered stickers (negative-prompt inversion), where the object's box is known.

    PSNR outside the source object's box grown by 6 px: P2P's edit vs the inverted source's reconstruction,
    and the naive way (the target prompt sampled from the same inverted noise and embeddings) likewise.
    `blend`: the local blend's mask (see blend_settings), which keeps the rest from the source.
    """
    from conceptlab.editing.edit import edit
    from conceptlab.editing.inversion import invert, uncond_kwargs
    from conceptlab.imaging import make_grid

    rows, grid = [], []
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    for head, src, tgt, a, b, r in real_swap_cases(n, size):
        inv = invert(pipe, r.image, src, method="negative-prompt")
        res = edit(pipe, src, tgt, inversion=inv, **blend_settings(blend, a, b))
        naive = pipe(tgt, num_inference_steps=inv.steps, guidance_scale=inv.guidance, latents=inv.latent.clone(),
                     **uncond_kwargs(pipe, inv, 1)).images[0]
        p2p = score_real_edit(judge, head, b, res.images[0], res.images[1], r.bbox)
        regen = score_real_edit(judge, head, b, res.images[0], naive, r.bbox)
        rows.append({"kind": head, "source": src, "target": tgt, "p2p_new": p2p["new"], "naive_new": regen["new"],
                     "p2p_psnr_out": p2p["psnr_out"], "naive_psnr_out": regen["psnr_out"],
                     "outside_share": p2p["outside_share"]})
        grid += [r.image, res.images[0], res.images[1], naive]
    make_grid(grid[:32], cols=8, scale=2).save(Path(out) / f"swap-real-{blend}.png")
    keys = ("p2p_new", "naive_new", "p2p_psnr_out", "naive_psnr_out", "outside_share")
    summary = {key: float(np.mean([min(r[key], PSNR_CAP) for r in rows])) for key in keys}
    summary["by_kind"] = {kind: {key: float(np.mean([min(r[key], PSNR_CAP) for r in rows if r["kind"] == kind]))
                                 for key in keys} for kind in ("object", "held_item")}
    return {"summary": summary, "rows": rows}


def global_edit_benchmark(pipe, judge, n: int, out: Path) -> dict:
    """`n` style (even k) and background (odd k) edits from seed 100 + k: the new one judged, object and colour kept."""
    from conceptlab.editing.edit import edit
    from conceptlab.imaging import make_grid

    rng, rows, grid = random.Random(1), [], []
    for k in range(n):
        obj, colour = rng.choice(OBJECTS), rng.choice(COLOURS)
        if k % 2 == 0:  # style
            new = rng.choice(("sketch", "painting"))
            scene = rng.choice(list(SCENE_WORDS))
            src = f"a sticker of a {colour} {obj} {SCENE_WORDS[scene]}"
            tgt = f"a {new} of a {colour} {obj} {SCENE_WORDS[scene]}"
            head = "style"
        else:  # background
            old, new = rng.sample(list(SCENE_WORDS), 2)
            src = f"a sticker of a {colour} {obj} {SCENE_WORDS[old]}"
            tgt = f"a sticker of a {colour} {obj} {SCENE_WORDS[new]}"
            head = "background"
        res = edit(pipe, src, tgt, seed=100 + k, **GLOBAL_EDIT)
        pred = judge.predict(res.images)
        rows.append({"kind": head, "source": src, "target": tgt, "new_right": pred[head][1] == new,
                     "object_kept": pred["object"][1] == pred["object"][0],
                     "colour_kept": pred["colour"][1] == pred["colour"][0],
                     "source_object_as_asked": pred["object"][0] == obj})
        grid += res.images
    make_grid(grid[:36], cols=6, scale=2).save(Path(out) / "global.png")
    summary = {kind: {key: float(np.mean([r[key] for r in rows if r["kind"] == kind]))
                      for key in ("new_right", "object_kept", "colour_kept", "source_object_as_asked")}
               for kind in ("style", "background")}
    return {"summary": summary, "rows": rows}


def reweight_benchmark(pipe, judge, seeds: int, out: Path, scales=(-1.0, 0.0, 0.5, 1.0, 1.5, 2.0)) -> dict:
    """'happy' re-weighted in "a sticker of a happy ...": the share judged happy per scale, with the word's share
    of the text states scaled too (the default) and with attention alone (Hertz et al.)."""
    from conceptlab.editing.edit import edit
    from conceptlab.imaging import make_grid

    rng = random.Random(2)
    prompts = [f"a sticker of a happy {rng.choice(COLOURS)} {rng.choice(OBJECTS)} on a white background"
               for _ in range(seeds)]
    report = {"scales": list(scales), "seeds": seeds, "word": "happy"}
    for name, text in (("text_and_attention", True), ("attention_only", False)):
        hits, strip = {s: [] for s in scales}, []
        for k, prompt in enumerate(prompts):
            for s in scales:
                res = edit(pipe, prompt, prompt, seed=200 + k, reweight={"happy": s}, reweight_text=text)
                hits[s].append(judge.predict([res.images[1]])["emotion"][0] == "happy")
                if k < 4:
                    strip.append(res.images[1])
        make_grid(strip, cols=len(scales), scale=2).save(Path(out) / f"reweight-{name}.png")
        shares = [float(np.mean(hits[s])) for s in scales]
        report[name] = {"judged_happy": shares, "monotonic": all(b >= a for a, b in zip(shares, shares[1:]))}
    return report


def inversion_benchmark(pipe, n: int, out: Path, refine_steps: int = 100) -> dict:
    """Null-text and negative-prompt inversion of rendered stickers, each from the encoder's latent and from
    the latent refined against the decoder (`refine_steps`); the VAE round trip of each latent beside them."""
    import torch

    from conceptlab.editing.inversion import encode_image, invert, reconstruct
    from conceptlab.evaluation.metrics import psnr
    from conceptlab.imaging import make_grid
    from conceptlab.world import render, sample_spec

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows, grid = [], []
    variants = [(m, r) for r in (0, refine_steps) for m in ("null-text", "negative-prompt")]
    for k in range(n):
        r = render(sample_spec(9000 + k), size)
        row = {"prompt": r.caption}
        for steps in (0, refine_steps):
            z = encode_image(pipe, r.image, steps)
            with torch.no_grad():
                vae_img = pipe.image_processor.postprocess(pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample)[0]
            row[f"vae_ceiling_psnr@{steps}"] = psnr(r.image, vae_img)
        for method, steps in variants:
            inv = invert(pipe, r.image, r.caption, method=method, refine_steps=steps)
            rec = reconstruct(pipe, inv)
            row[f"{method}@{steps}"] = {"psnr": psnr(r.image, rec), "seconds": inv.seconds}
            if k < 6 and method == "null-text":
                grid.append(rec)
        if k < 6:
            grid += [r.image]
        rows.append(row)
    make_grid(grid, cols=3, scale=2).save(Path(out) / "real.png")  # null-text plain, null-text refined, input
    mean = lambda f: float(np.mean([f(r) for r in rows]))  # noqa: E731
    summary = {f"vae_ceiling_psnr@{s}": mean(lambda r, s=s: r[f"vae_ceiling_psnr@{s}"]) for s in (0, refine_steps)}
    for m, s in variants:
        summary[f"{m}@{s}"] = {k: mean(lambda r, k=k, key=f"{m}@{s}": r[key][k]) for k in ("psnr", "seconds")}
    summary["speedup"] = summary[f"null-text@{refine_steps}"]["seconds"] / summary[f"negative-prompt@{refine_steps}"]["seconds"]
    return {"summary": summary, "rows": rows}
