import json

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from conceptlab.cli.main import main


def test_train_dreambooth_lora_then_convert_and_merge(tiny_dir, concept_dirs, tmp_path, capsys):
    out = tmp_path / "db"
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", f"tuki={concept_dirs / 'broccoli'},class=monster",
                 "--subject", f"bnh={concept_dirs / 'emoji'},class=monster", "--lora", "--rank", "2",
                 "--prior-preservation", "--class-images", "2", "--class-steps", "3", "--steps", "2", "--batch-size", "1",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "class-images" / "monster" / "manifest.json").read_text())
    assert manifest["prompt"] == "a monster" and manifest["count"] == 2 and manifest["steps"] == 3
    lora = out / "lora" / "pytorch_lora_weights.safetensors"
    assert main(["lora", "convert", str(lora), "--to", "kohya", "--model", str(tiny_dir), "--out",
                 str(tmp_path / "k.safetensors")]) == 0
    assert main(["lora", "merge", str(tmp_path / "k.safetensors"), "--model", str(tiny_dir), "--out",
                 str(tmp_path / "merged")]) == 0
    merged = StableDiffusionPipeline.from_pretrained(tmp_path / "merged")
    with_lora = StableDiffusionPipeline.from_pretrained(tiny_dir)
    with_lora.load_lora_weights(str(lora))
    for p in (merged, with_lora):
        p.set_progress_bar_config(disable=True)
    run = lambda p: p("a tuki monster", num_inference_steps=2, generator=torch.Generator().manual_seed(0),  # noqa: E731
                      output_type="np").images
    assert np.allclose(run(merged), run(with_lora), atol=1e-4)


def test_dreambooth_bad_subject_exit_code(tiny_dir, tmp_path, capsys):
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", "tuki=somewhere", "--out",
                 str(tmp_path / "x")]) == 2
    assert "class=WORD" in capsys.readouterr().err


def test_masks_and_mask_weight_reach_the_config(tmp_path):
    from conceptlab.cli.main import build_parser
    from conceptlab.cli.train import dreambooth_config

    args = build_parser().parse_args(["train", "dreambooth", "--subject", "tuki=d/tuki,class=monster,masks=d/tuki/masks",
                                      "--mask-weight", "3", "--out", str(tmp_path)])
    cfg = dreambooth_config(args)
    assert cfg.subjects[0].masks == "d/tuki/masks" and cfg.mask_weight == 3.0


def test_random_crop_reaches_every_subject_method_and_the_default_is_the_centre(tmp_path):
    from conceptlab.cli.main import build_parser
    from conceptlab.cli.train import dreambooth_config, pivotal_config

    for command, config, ident in (("dreambooth", dreambooth_config, "tuki"), ("pivotal", pivotal_config, "<tuki>")):
        argv = ["train", command, "--subject", f"{ident}=d/tuki,class=monster", "--out", str(tmp_path)]
        assert config(build_parser().parse_args(argv)).center_crop is True
        assert config(build_parser().parse_args([*argv, "--random-crop"])).center_crop is False


def test_timestep_bias_flags_reach_the_config_and_a_lone_setting_is_refused(tiny_dir, tmp_path, capsys):
    from conceptlab.cli.main import build_parser
    from conceptlab.cli.train import dreambooth_config, pivotal_config

    args = build_parser().parse_args(["train", "dreambooth", "--subject", "tuki=d/tuki,class=monster", "--timestep-bias",
                                      "range", "--timestep-bias-range", "0", "300", "--timestep-bias-multiplier", "4",
                                      "--out", str(tmp_path)])
    bias = dreambooth_config(args).timestep_bias
    assert (bias.strategy, bias.begin, bias.end, bias.multiplier) == ("range", 0, 300, 4.0)
    args = build_parser().parse_args(["train", "pivotal", "--subject", "<tuki>=d/tuki,class=monster", "--timestep-bias",
                                      "earlier", "--out", str(tmp_path)])
    assert pivotal_config(args).timestep_bias.strategy == "earlier"
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", "tuki=d/tuki,class=monster",
                 "--timestep-bias-portion", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "--timestep-bias" in capsys.readouterr().err


def test_ema_decay_reaches_the_config_and_bad_values_are_refused_at_parse_time(tiny_dir, tmp_path, capsys):
    from conceptlab.cli.main import build_parser
    from conceptlab.cli.train import dreambooth_config

    args = build_parser().parse_args(["train", "dreambooth", "--subject", "tuki=d/tuki,class=monster", "--ema-decay",
                                      "0.99", "--out", str(tmp_path)])
    assert dreambooth_config(args).ema_decay == 0.99
    assert dreambooth_config(build_parser().parse_args(["train", "dreambooth", "--subject", "tuki=d/tuki,class=monster",
                                                        "--out", str(tmp_path)])).ema_decay == 0.0
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", "tuki=d/tuki,class=monster",
                 "--ema-decay", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--ema-decay" in capsys.readouterr().err


def test_text_encoder_lr_reaches_both_configs_and_is_refused_without_the_text_encoder(tiny_dir, tmp_path, capsys):
    from conceptlab.cli.main import build_parser
    from conceptlab.cli.train import dreambooth_config, pivotal_config

    base = ["--train-text-encoder", "--text-encoder-lr", "2e-5", "--out", str(tmp_path)]
    args = build_parser().parse_args(["train", "dreambooth", "--subject", "tuki=d/tuki,class=monster", *base])
    assert dreambooth_config(args).text_encoder_lr == 2e-5
    args = build_parser().parse_args(["train", "pivotal", "--subject", "<tuki>=d/tuki,class=monster", *base])
    assert pivotal_config(args).text_encoder_lr == 2e-5
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", "tuki=d/tuki,class=monster",
                 "--text-encoder-lr", "2e-5", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--text-encoder-lr" in err and "--train-text-encoder" in err and "Traceback" not in err
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", "tuki=d/tuki,class=monster",
                 "--train-text-encoder", "--text-encoder-lr", "-1", "--out", str(tmp_path / "y")]) == 2
    assert "--text-encoder-lr" in capsys.readouterr().err


def test_caption_dropout_reaches_both_configs_and_bad_values_are_refused_at_parse_time(tiny_dir, tmp_path, capsys):
    from conceptlab.cli.main import build_parser
    from conceptlab.cli.train import dreambooth_config, pivotal_config

    tail = ["--caption-dropout", "0.3", "--out", str(tmp_path)]
    args = build_parser().parse_args(["train", "dreambooth", "--subject", "tuki=d/tuki,class=monster", *tail])
    assert dreambooth_config(args).caption_dropout == 0.3
    args = build_parser().parse_args(["train", "pivotal", "--subject", "<tuki>=d/tuki,class=monster", *tail])
    assert pivotal_config(args).caption_dropout == 0.3
    assert main(["train", "dreambooth", "--model", str(tiny_dir), "--subject", "tuki=d/tuki,class=monster",
                 "--caption-dropout", "1.5", "--out", str(tmp_path / "x")]) == 2
    assert "--caption-dropout" in capsys.readouterr().err
