"""Maintainer tool: train the sticker-world judge and measure it on fresh renders.

    python scripts/train_judge.py OUT [--steps 1500] [--images 24000] [--resume] [--copy]   # --copy: install as shipped
    python scripts/train_judge.py OUT --features ...   # the features judge: a monster's shape, eyes, top, pattern

Renders JudgeConfig.images stickers (every attribute, held-out ones included), trains with blur/noise/
colour-jitter augmentation on the shared training loop (checkpoints in OUT/checkpoints; Ctrl-C saves, --resume
continues), then reports per-head accuracy on 3,000 renders from unseen seeds, plain and
softened, and the named-individual head on monsters alone; the numbers go into the safetensors metadata.
With --features it trains the features judge instead (monsters only; heads FEATURE_HEADS), which says which of
a subject's marks a generation lost.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from conceptlab.evaluation.judge import (
    JudgeConfig,
    features_config,
    judge_accuracy,
    render_dataset,
    shipped_features_judge,
    shipped_judge,
    train_judge,
)
from conceptlab.training.loop import TrainingStopped


def main(out: str, steps: int, images: int, copy: bool, resume: bool = False, features: bool = False) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    make = features_config if features else JudgeConfig
    cfg = make(steps=steps, images=images)
    cache = out / "data.npz"
    if cache.is_file():
        d = np.load(cache)
        images, labels = d["imgs"][:cfg.images], {k: d[k][:cfg.images] for k in cfg.heads}
    else:
        images, labels = render_dataset(cfg)
        np.savez(cache, imgs=images, **labels)
    judge = train_judge(cfg, images, labels, out, resume=resume)
    test_images, test_labels = render_dataset(make(images=3000, seed=99))
    plain = judge_accuracy(judge, test_images, test_labels)
    soft = judge_accuracy(judge, test_images, test_labels, soften=True)
    if features:
        judge.save(out, {"fresh_render_accuracy": json.dumps(plain), "softened_accuracy": json.dumps(soft)})
        print(json.dumps({"fresh": plain, "softened": soft}, indent=2))
        return install(out, shipped_features_judge()) if copy else None
    monsters = test_labels["object"] == cfg.heads["object"].index("monster")
    individual = judge_accuracy(judge, test_images[monsters], {k: v[monsters] for k, v in test_labels.items()})["individual"]
    judge.save(out, {"fresh_render_accuracy": json.dumps(plain), "softened_accuracy": json.dumps(soft),
                     "individual_accuracy_on_monsters": str(individual)})
    print(json.dumps({"fresh": plain, "softened": soft, "individual_on_monsters": individual}, indent=2))
    if copy:
        install(out, shipped_judge())


def install(out: Path, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy2(out / "judge.safetensors", where / "judge.safetensors")
    print(f"installed as {where / 'judge.safetensors'}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    opt = lambda name, default: int(argv[argv.index(name) + 1]) if name in argv else default  # noqa: E731
    try:
        main(argv[0], opt("--steps", 1500), opt("--images", 24000), "--copy" in argv, "--resume" in argv,
             "--features" in argv)
    except TrainingStopped as stop:  # the loop saved the step and said how to continue
        sys.exit(143 if stop.result.stopped == "terminated" else 130)
