"""The first seed project's classifier, done end to end (the evaluation issue's proof).

    python scripts/classifier_proof.py OUT --ti DIR [--arch resnet50] [--per-class 150]

The seed trained a ResNet-50 to tell four broccoli emotions apart (~30% validation accuracy) and scored
its textual-inversion generations with it (~1 in 5 recognizable). Here, on the sticker world:
1. "real": a classifier trained on 1,200 rendered broccoli stickers (4 emotions, every colour, scene,
   style and accessory), validated on a stratified split and tested on 400 renders of unseen seeds.
2. Generations of the four emotion tokens learned by scripts/ti_proof.py (DIR = its output), scored by
   that classifier (recognizability, the seed's "1 in 5").
3. "synthetic": the same classifier trained only on those generations, and "synthetic-filtered" on the
   ones the sticker-world judge recognises as broccoli with the asked emotion (the seed curated by hand),
   both tested on the same 400 real renders: the value of the synthetic data as a number.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from conceptlab.concepts.tokens import load_concept_paths
from conceptlab.evaluation.classifier import Classifier, ClassifierConfig, recognizability, train_classifier
from conceptlab.evaluation.datasets import read_labelled_folder
from conceptlab.evaluation.judge import load_judge
from conceptlab.generation.generate import generate_batch
from conceptlab.imaging import make_grid
from conceptlab.io import atomic_write_json
from conceptlab.models.loading import load_pipeline
from conceptlab.world.export import export_images

EMOTIONS = ("happy", "sad", "angry", "in love")
SCENES = ("", " at the beach", " in the jungle", " in the desert", " on a snowy mountain", " by a river")


def test_accuracy(folder: Path, data: Path) -> float:
    """Share of the real test renders classified right (a class the classifier lacks counts as wrong)."""
    clf = Classifier(folder)
    test = read_labelled_folder(data, "emotion")
    predicted, _ = clf.predict([Image.open(p).convert("RGB") for p in test.paths])
    return sum(p == t for p, t in zip(predicted, test.labels)) / len(test.labels)


def trained(data: Path, cfg: ClassifierConfig, out: Path) -> dict:
    """Trains unless `out` already holds a trained classifier (reruns pick up where they stopped)."""
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    return train_classifier(read_labelled_folder(data, "emotion"), cfg, out)


def generate_synthetic(ti: Path, out: Path, per_class: int) -> Path:
    """per_class generations of each emotion token, with metadata.jsonl labelled by the asked emotion."""
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    tokens = {e: f"<broccoli-{e.replace(' ', '-')}>" for e in EMOTIONS}
    load_concept_paths(pipe, [ti / "four-emotions" / t.strip("<>") / "learned_embeds.safetensors" for t in tokens.values()])
    out.mkdir(parents=True, exist_ok=True)
    rows, seed = [], 0
    for e, tok in tokens.items():
        for start in range(0, per_class, 16):
            n = min(16, per_class - start)
            prompts = [f"a sticker of a {tok}{SCENES[(start + i) % len(SCENES)]}" for i in range(n)]
            images = generate_batch(pipe, prompts, list(range(seed, seed + n)), steps=30, batch_size=16, progress=False)
            for i, im in enumerate(images):
                name = f"{e.replace(' ', '-')}-{seed + i:05d}.png"
                im.save(out / name)
                rows.append({"file_name": name, "emotion": e, "prompt": prompts[i], "seed": seed + i})
            seed += n
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def judge_filter(src: Path, out: Path) -> int:
    """Keeps the generations the judge sees as broccoli with the asked emotion; returns how many."""
    rows = [json.loads(x) for x in (src / "metadata.jsonl").read_text().splitlines()]
    images = [Image.open(src / r["file_name"]).convert("RGB") for r in rows]
    pred = load_judge().predict(images)
    out.mkdir(parents=True, exist_ok=True)
    kept = []
    for k, r in enumerate(rows):
        if pred["object"][k] == "broccoli" and pred["emotion"][k] == r["emotion"]:
            images[k].save(out / r["file_name"])
            kept.append(r)
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return len(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--ti", type=Path, required=True, help="the output folder of scripts/ti_proof.py")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=25)
    args = ap.parse_args()
    out = args.out
    broccoli = {"object": {"broccoli"}, "emotion": set(EMOTIONS)}
    export_images(out / "real-train", 1200, seed=40_000, only=broccoli)
    export_images(out / "real-test", 400, seed=60_000, only=broccoli)
    cfg = lambda: ClassifierConfig(label="emotion", arch=args.arch, epochs=args.epochs)  # noqa: E731
    report = {"arch": args.arch}
    report["real"] = trained(out / "real-train", cfg(), out / "clf-real")
    report["real"]["test_accuracy"] = test_accuracy(out / "clf-real", out / "real-test")
    print("real", report["real"]["accuracy"], report["real"]["test_accuracy"], flush=True)
    synth = out / "synthetic"
    if not (synth / "metadata.jsonl").is_file():
        generate_synthetic(args.ti, synth, args.per_class)
    data = read_labelled_folder(synth, "emotion")
    rec = recognizability(Classifier(out / "clf-real"), data.paths, data.labels)
    report["recognizable_generations"] = {"overall": rec["recognizable"], "per_class": rec.get("per_class"),
                                          "images": len(data.paths)}
    make_grid([Image.open(p).convert("RGB") for p in data.paths[:: max(1, len(data.paths) // 32)]][:32], cols=8, scale=2).save(
        out / "synthetic.png")
    report["filtered_kept"] = judge_filter(synth, out / "synthetic-filtered")
    for name, folder in (("synthetic", synth), ("synthetic-filtered", out / "synthetic-filtered")):
        report[name] = trained(folder, cfg(), out / f"clf-{name}")
        report[name]["classes_trained_on"] = report[name]["classes"]
        report[name]["test_accuracy"] = test_accuracy(out / f"clf-{name}", out / "real-test")
        print(name, report[name]["accuracy"], report[name]["test_accuracy"], flush=True)
    summary = {k: {"val": report[k]["accuracy"], "test_on_real": report[k]["test_accuracy"]}
               for k in ("real", "synthetic", "synthetic-filtered")}
    report["summary"] = summary
    atomic_write_json(report, out / "classifier-proof.json")
    print(json.dumps({"summary": summary, "recognizable": report["recognizable_generations"]["overall"],
                      "filtered_kept": report["filtered_kept"]}, indent=1))


if __name__ == "__main__":
    main()
