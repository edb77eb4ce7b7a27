"""Sampling-time levers on a trained DreamBooth pipeline: which of them bring the subject's identity back
without losing the asked emotion, judged.

    python scripts/dreambooth_sampling_levers.py PIPELINE OUT [--subjects tuki bnh] [--first-seed 1000] [--seeds 2]
        [--variants base sag:wid=5:late=0.5 no-emotion post:post=0.5 ...]

PIPELINE is a DreamBooth run's pipeline folder (dreambooth_proof.py's OUT/ours/pipeline or OUT/reference/pipeline).
The prompts are the proof's ("a sticker of a <emotion> <id> monster <scene>", 4 emotions x 5 scenes x --seeds
seeds per subject); each variant samples them with DDIM (30 steps, or its steps=N) in one loop:

    eps = u + w (c - u) + wid (c - k)      # from step late*steps on; u: "", c: the prompt, k: the prompt without
                                           # the identifier (Subject-Agnostic Guidance, Chan et al. CVPR 2024)
    eps = u + w (c - u) + wn (cn - kn)     # cn, kn: the prompt and the class prompt without the emotion word
    eps = u + w (c - u) + we (c - cn)      # emotion guidance: the emotion word's own direction, from late*steps on
    c -> cn before pre*steps or from post*steps on (prompt switching); no-emotion: cn at every step

and the sticker-world judge reads identity, emotion and scene per subject, and the features judge which of the
subject's marks (colour, shape, eyes, top, pattern) its generations keep. Choose on --first-seed 1000, report on
2000. Writes OUT/levers.json (appending variants) and a grid per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from conceptlab.evaluation.judge import load_features_judge, load_judge  # noqa: E402
from conceptlab.evaluation.recipes import dreambooth as R  # noqa: E402
from conceptlab.generation.generate import seeded_generators  # noqa: E402
from conceptlab.imaging import make_grid  # noqa: E402
from conceptlab.models.loading import load_pipeline  # noqa: E402

DEFAULTS = {"w": 7.5, "wid": 0.0, "late": 0.0, "wn": 0.0, "we": 0.0, "pre": 0.0, "post": 0.0, "no_emotion": 0.0,
            "steps": 30.0}


@torch.no_grad()
def embed(pipe, prompts: list[str]) -> torch.Tensor:
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt")
    return pipe.text_encoder(tok.input_ids)[0]  # (n, T, D)


@torch.no_grad()
def sample(pipe, cases, v: dict, steps: int = 30):
    """Images of `cases` ((ident, emotion, scene, seed), ...) under variant `v` (DEFAULTS' keys)."""
    n = len(cases)
    e = {"u": [""] * n, "c": [R.subject_prompt(i, "monster", em, sc) for i, em, sc, _ in cases],
         "k": [R.subject_prompt("", "monster", em, sc) for i, em, sc, _ in cases],
         "cn": [R.subject_prompt(i, "monster", "", sc) for i, _, sc, _ in cases],
         "kn": [R.subject_prompt("", "monster", "", sc) for *_, sc, _ in cases]}
    e = {k: embed(pipe, p) for k, p in e.items()}
    sched = pipe.scheduler
    sched.set_timesteps(steps)
    size, ch = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    lat = torch.cat([torch.randn((1, ch, size, size), generator=g) for g in seeded_generators([c[3] for c in cases])])
    lat = lat * sched.init_noise_sigma  # (n, C, h, w)
    for k, t in enumerate(sched.timesteps):
        switched = v["no_emotion"] or k < v["pre"] * steps or (v["post"] and k >= v["post"] * steps)
        names = ["u", "cn" if switched else "c"]
        if v["wid"] and k >= v["late"] * steps:
            names.append("k")
        if v["wn"]:
            names += ["cn", "kn"]
        if v["we"] and k >= v["late"] * steps:
            names.append("cn")
        names = list(dict.fromkeys(names))  # switched to cn with wn on: cn is evaluated once
        x = sched.scale_model_input(lat, t)
        out = pipe.unet(torch.cat([x] * len(names)), t, encoder_hidden_states=torch.cat([e[m] for m in names])).sample
        eps = dict(zip(names, out.chunk(len(names))))
        u, c = eps["u"], eps[names[1]]
        guided = u + v["w"] * (c - u)
        if "k" in eps:
            guided = guided + v["wid"] * (c - eps["k"])
        if v["wn"]:
            guided = guided + v["wn"] * (eps["cn"] - eps["kn"])
        if v["we"] and k >= v["late"] * steps:
            guided = guided + v["we"] * (c - eps["cn"])
        lat = sched.step(guided, t, lat).prev_sample
    images = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(images, output_type="pil")


def parse_variant(text: str) -> tuple[str, dict]:
    """'sag:wid=5:late=0.5' -> ('sag', {...DEFAULTS, wid: 5, late: 0.5}); 'no-emotion' sets no_emotion."""
    name, *args = text.split(":")
    v = dict(DEFAULTS, no_emotion=1.0 if name == "no-emotion" else 0.0)
    for a in args:
        key, _, value = a.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"--variants {text!r}: unknown setting {key!r}; use {sorted(DEFAULTS)}")
        v[key] = float(value)
    return name, v


def score(pipe, judge, subjects, first_seed: int, seeds: int, v: dict, features=None):
    cases = [(i, em, sc, s) for i in subjects for em in R.EMOTIONS for sc in R.SCENES
             for s in range(first_seed, first_seed + seeds)]
    images = [im for k in range(0, len(cases), 16) for im in sample(pipe, cases[k:k + 16], v, int(v["steps"]))]
    pred = judge.predict(images)
    res = {}
    for ident in subjects:
        mine = [k for k, c in enumerate(cases) if c[0] == ident]
        res[ident] = {m: sum(pred[head][k] == cases[k][j] for k in mine) / len(mine)
                      for m, head, j in (("identity", "individual", 0), ("emotion", "emotion", 1),
                                         ("scene", "background", 2))} | {"images": len(mine)}
        res[ident]["missed_as"] = R.missed_as([pred["individual"][k] for k in mine], ident)
        res[ident]["emotion_missed_as"] = {em: R.missed_as([pred["emotion"][k] for k in mine if cases[k][1] == em], em)
                                           for em in R.EMOTIONS}
        if features is not None:  # which of the subject's marks its generations keep (R.subject_marks)
            labels = R.mark_labels(features, [images[k] for k in mine], [pred["colour"][k] for k in mine])
            res[ident]["marks"] = R.subject_marks(labels, ident, [pred["individual"][k] == ident for k in mine])
    return res, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--subjects", nargs="+", default=["tuki", "bnh"])
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["base", "sag:wid=5:late=0.5"])
    a = ap.parse_args()
    pipe, judge, features = load_pipeline(str(a.pipeline)), load_judge(), load_features_judge()
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "levers.json"
    report = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    for text in a.variants:
        name, v = parse_variant(text)
        res, images = score(pipe, judge, a.subjects, a.first_seed, a.seeds, v, features)
        make_grid(images[::a.seeds], cols=len(R.SCENES), scale=2).save(a.out / f"{name}-{a.first_seed}.png")
        report["runs"].append({"variant": text, "settings": v, "pipeline": str(a.pipeline), "first_seed": a.first_seed,
                               "seeds": a.seeds, "scores": res})
        path.write_text(json.dumps(report, indent=1))
        print(text, a.first_seed, json.dumps({i: {m: round(x, 3) if isinstance(x, float) else x for m, x in s.items()}
                                              for i, s in res.items()}), flush=True)


if __name__ == "__main__":
    main()
