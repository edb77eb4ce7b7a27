"""Per-subject priors: each subject's own prior weight and class-prompt set, and the loss they give."""

from __future__ import annotations

import pytest
import torch

from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline
from conceptlab.training.data import CachedLatents
from conceptlab.training.diffusion import denoising_loss
from conceptlab.training.dreambooth import (
    DreamBooth,
    DreamBoothConfig,
    SubjectConfig,
    check_subjects,
    class_prompts,
    parse_subject,
    prior_key,
)
from conceptlab.training.loop import TrainConfig


def test_subject_spec_takes_its_own_prior_weight_and_class_prompts(tmp_path):
    s = parse_subject("tuki=data/tuki,class=monster,prior_weight=0.25,class_prompts=prompts.txt")
    assert (s.prior_weight, s.class_prompts) == (0.25, "prompts.txt")
    assert parse_subject("tuki=d,class=monster").prior_weight is None
    with pytest.raises(InputError, match=r"--subject tuki,prior_weight"):
        parse_subject("tuki=d,class=monster,prior_weight=-1")
    with pytest.raises(InputError, match=r"--subject tuki,prior_weight"):
        parse_subject("tuki=d,class=monster,prior_weight=lots")


def test_class_prompt_sets_per_subject(concept_dirs, tmp_path):
    (tmp_path / "p.txt").write_text("a happy monster\n\na sad monster\n")
    own = SubjectConfig("bnh", str(concept_dirs / "emoji"), "monster", class_prompts=str(tmp_path / "p.txt"))
    shared = SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster")
    cfg = DreamBoothConfig(subjects=[shared, own], prior_preservation=True)
    check_subjects(cfg)
    assert class_prompts(cfg) == {"monster": ["a monster"], "monster/bnh": ["a happy monster", "a sad monster"]}
    assert (prior_key(shared), prior_key(own)) == ("monster", "monster/bnh")
    (tmp_path / "empty.txt").write_text("\n")
    own.class_prompts = str(tmp_path / "empty.txt")
    with pytest.raises(InputError, match=r"--subject bnh,class_prompts.*holds no prompt"):
        check_subjects(cfg)
    own.class_prompts = "captions"
    with pytest.raises(InputError, match=r"--subject bnh,class_prompts.*has no captions"):
        check_subjects(cfg)


def test_each_class_example_is_weighted_by_its_subjects_prior_weight(concept_dirs):
    """loss = mean_i L_inst_i + (1/B) sum_i w[subject_i] L_class_i, recomputed term by term."""
    pipe = build_pipeline("tiny")
    subjects = [SubjectConfig("tuki", str(concept_dirs / "broccoli"), "monster", prior_weight=0.25),
                SubjectConfig("bnh", str(concept_dirs / "emoji"), "emoji", prior_weight=3.0)]
    from PIL import Image

    pools = {w: CachedLatents.encode(pipe.vae, [Image.new("RGB", (32, 32), c) for c in colours], flip=False)
             for w, colours in (("monster", ("red", "blue")), ("emoji", ("yellow", "green")))}
    cfg = DreamBoothConfig(subjects=subjects, prior_preservation=True, train=TrainConfig(batch_size=4))
    method = DreamBooth(pipe, cfg, pools)
    got = method.loss(4, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)
    inst, inst_txt, inst_w, cls, cls_txt, who = method.batch(4, g, with_subjects=True)
    cond = method.encode(inst_txt + cls_txt)
    per = denoising_loss(pipe.unet, method.scheduler, torch.cat([inst, cls]), cond.hidden, g, reduction="none")
    weights = {0: 0.25, 1: 3.0}
    want = sum(per[i].item() for i in range(4)) / 4 + sum(weights[int(who[i])] * per[4 + i].item() for i in range(4)) / 4
    assert sorted(int(s) for s in who) == [0, 0, 1, 1] and all(t.startswith("a ") for t in cls_txt)
    assert got.item() == pytest.approx(want, rel=1e-6)
    uniform = sum(per[i].item() for i in range(8)) / 4  # every weight 1: a different number, so the check can fail
    assert abs(got.item() - uniform) > 1e-4
