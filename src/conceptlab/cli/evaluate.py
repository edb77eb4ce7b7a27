"""`conceptlab evaluate prompts|ti|dreambooth|edit`: score a model, or a run, with the sticker-world judge;
`evaluate similarity`: CLIP-T, CLIP-I and DINO of any folder of images, with your own model weights."""

from __future__ import annotations

from conceptlab.cli.common import add_command, add_group, add_model_flags, flag, load_model
from conceptlab.validation import GUIDANCE, IMAGES, SAMPLING_STEPS, SEED

OUT_HELP = ("folder for scores.json (the numbers, settings, seeds, date and each bar's verdict), grid.png and "
            "index.html (default: RUN-eval beside RUN; never RUN itself or a folder inside it: evaluate does not "
            "write into what it measures)")
JUDGE_HELP = "judge folder from scripts/train_judge.py (default: the shipped judge)"


def _run_flags(p, what: str, model_default: str) -> None:
    flag(p, "run_dir", metavar="RUN", help=f"the --out folder of {what}")
    flag(p, "--out", default=None, help=OUT_HELP)
    flag(p, "--model", default=None, help=model_default)
    flag(p, "--device", default=None, help="torch device, e.g. cuda or cpu (default: cpu)")
    flag(p, "--judge", default=None, help=JUDGE_HELP)


def add_parser(sub):
    esub = add_group(sub, "evaluate", help="score a model or a run with the sticker-world judge, or any images with "
                     "CLIP and DINO",
                     dest="evaluate_command")
    e = add_command(esub, "prompts", help="generate a fixed prompt set with fixed seeds and judge every attribute",
                    run=run_prompts)
    add_model_flags(e)
    flag(e, "-n", "--num-prompts", dest="n", type=IMAGES.arg, default=300, help="prompts of seen combinations")
    flag(e, "--unseen", type=int, default=100, help="prompts of held-out attribute combinations")
    flag(e, "--steps", type=SAMPLING_STEPS.arg, default=30, help="sampling steps per image")
    flag(e, "--guidance", type=GUIDANCE.arg, default=7.5, help="classifier-free guidance scale")
    flag(e, "--judge", default=None, help=JUDGE_HELP)
    flag(e, "--out", required=True, help="folder for scores.json, a sample grid and index.html")

    t = add_command(esub, "ti", run=run_ti, help="judge a textual-inversion run: each concept drawn as its object "
                    "with the asked emotion, beside the plain word")
    _run_flags(t, "`conceptlab train ti`", "model the tokens are used with (default: the one the run trained on)")
    flag(t, "--per-prompt", type=IMAGES.arg, default=25, help="generations per prompt (seeds first-seed, ...)")
    flag(t, "--first-seed", type=SEED.arg, default=0,
         help="first generation seed; choose settings on one range and report on another (default: 0)")
    flag(t, "--guidance", type=GUIDANCE.arg, nargs="+", default=[7.5],
         help="guidance scales to judge at; the first is the headline")
    flag(t, "--steps", type=SAMPLING_STEPS.arg, default=30, help="sampling steps per image")
    flag(t, "--token", dest="tokens", action="append", default=None, help="judge only this concept; repeatable")
    flag(t, "--object", dest="objects", action="append", default=None, metavar="TOKEN=WORD",
         help="the judge's object word for a concept whose init word and training images name none; repeatable")

    d = add_command(esub, "dreambooth", run=run_dreambooth, help="judge a DreamBooth run: identity, emotion and "
                    "scene of its subjects, and how far the class prompt drifted")
    _run_flags(d, "`conceptlab train dreambooth`", "base model (default: the one the run trained on)")
    flag(d, "--seeds", type=IMAGES.arg, default=3, help="seeds per subject x emotion x scene prompt")
    flag(d, "--class-images", type=IMAGES.arg, default=48, help="generations of the bare class prompt, before and "
                                                                 "after (seeds 1000, ...)")
    flag(d, "--baseline", choices=("all", "class", "none"), default="all",
         help="also judge the base model: all, only its class prompt (the drift needs it), or none")
    flag(d, "--steps", type=SAMPLING_STEPS.arg, default=30, help="sampling steps per image")

    x = add_command(esub, "edit", run=run_edit, help="judge a `conceptlab edit` run's word swaps: the new thing "
                    "there, and PSNR outside the swapped words, beside regenerating the target prompt")
    _run_flags(x, "`conceptlab edit` (generated edits; edits of a --from-image picture cannot be scored)",
               "the model the edits were made with (edits.json does not name it; default: the shipped base "
               "model). It must regenerate the run's source images")

    m = add_command(esub, "similarity", run=run_similarity, help="CLIP-T, CLIP-I and DINO of a folder of images "
                    "(any model: the DreamBooth paper's metrics), with CLIP and DINO weights you have")
    flag(m, "folder", metavar="FOLDER", help="the images, e.g. a `conceptlab generate` --out folder")
    flag(m, "--clip-model", default=None, metavar="PATH",
         help="a local CLIPModel folder (e.g. openai/clip-vit-large-patch14 saved): CLIP-T, and CLIP-I with --references")
    flag(m, "--dino-model", default=None, metavar="PATH", help="a local ViT folder (e.g. facebook/dino-vits16): DINO")
    flag(m, "--references", default=None, metavar="DIR", help="real pictures to compare with (the training images)")
    flag(m, "--prompt", default=None, help="the prompt CLIP-T scores every image against (default: each image's "
                                           "own, from generations.jsonl or its stored settings)")
    flag(m, "--out", default=None, metavar="FILE", help="also write the scores, per image and overall, as JSON")
    return esub


def run_prompts(args) -> int:
    from pathlib import Path

    from conceptlab.errors import InputError
    from conceptlab.evaluation.prompts import evaluate_prompts, standard_prompts, write_prompt_report
    from conceptlab.evaluation.recipes.common import load_judge_checked

    if args.n < 1 or args.unseen < 0:
        raise InputError("-n/--unseen", (args.n, args.unseen), "need n >= 1 and unseen >= 0", "Pass -n 300 --unseen 100")
    judge = load_judge_checked(args.judge)
    pipe = load_model(args)
    scores = evaluate_prompts(pipe, standard_prompts(args.n, args.unseen), judge, steps=args.steps,
                              guidance=args.guidance)
    path = write_prompt_report(scores, Path(args.out), title=f"Prompt accuracy of {args.model or 'the base model'}")
    for row in scores.table():
        print(row)
    print(f"report: {path}")
    return 0


def _parse_objects(items: list[str] | None) -> dict[str, str]:
    from conceptlab.errors import InputError

    objects = {}
    for item in items or []:
        token, sep, word = item.partition("=")
        if not sep or not token or not word:
            raise InputError("--object", item, "expected TOKEN=WORD", "e.g. --object '<broccoli>=broccoli'")
        objects[token] = word
    return objects


def _print(result: dict) -> None:
    for bar in result["bars"]:
        print(("  ok    " if bar["passed"] else "  BELOW ") + bar["line"])
    print(f"{result['verdict']}; scores in {result['out']}/scores.json, grid in {result['out']}/grid.png")


def run_ti(args) -> int:
    from conceptlab.evaluation.recipes import evaluate_ti_run

    result = evaluate_ti_run(args.run_dir, args.out, model=args.model, judge_path=args.judge, device=args.device,
                             per_prompt=args.per_prompt, first_seed=args.first_seed, guidance=args.guidance,
                             steps=args.steps, tokens=args.tokens, objects=_parse_objects(args.objects))
    for token, s in result["concepts"].items():
        print(f"{token}: {s['share']:.1%} of {s['images']} judged {s['object']} with the asked emotion "
              f"(plain word: {s['plain_word']['share']:.1%})")
    _print(result)
    return 0


def run_dreambooth(args) -> int:
    from conceptlab.evaluation.judge import load_features_judge
    from conceptlab.evaluation.recipes import evaluate_dreambooth_run

    result = evaluate_dreambooth_run(args.run_dir, args.out, model=args.model, judge_path=args.judge, device=args.device,
                                     seeds=args.seeds, class_images=args.class_images, baseline=args.baseline,
                                     steps=args.steps, features=load_features_judge())
    s = result["subjects"]
    print(f"identity {s['identity']:.1%}, emotion {s['emotion']:.1%}, scene {s['scene']:.1%} of {s['images']} "
          f"generations; per subject: " + ", ".join(f"{k} {v:.0%}" for k, v in s["identity_per_subject"].items()))
    for ident, m in s["per_subject"].items():  # which of a named subject's marks its generations keep
        if "marks" in m:
            print(f"{ident}'s marks kept: " + ", ".join(f"{k} {v:.0%}" for k, v in m["marks"]["all"].items()))
    _print(result)
    return 0


def run_edit(args) -> int:
    from conceptlab.evaluation.recipes import evaluate_edits

    result = evaluate_edits(args.run_dir, args.out, model=args.model, judge_path=args.judge, device=args.device)
    s = result["summary"]
    new = "not judged" if s["p2p_new"] is None else f"{s['p2p_new']:.1%} (regenerating: {s['naive_new']:.1%})"
    psnr = "not measured" if s["p2p_psnr_out"] is None else \
        f"{s['p2p_psnr_out']:.1f} dB (regenerating: {s['naive_psnr_out']:.1f} dB)"
    print(f"{len(result['rows'])} swaps ({len(result['skipped'])} other edits skipped): new thing judged there {new}; "
          f"PSNR outside the swapped words {psnr}")
    _print(result)
    return 0


def run_similarity(args) -> int:
    from pathlib import Path

    from conceptlab.evaluation.folder import score_similarity
    from conceptlab.io import atomic_write_json

    scores = score_similarity(args.folder, args.clip_model, args.dino_model, args.references, args.prompt)
    summary = scores.summary()
    print(f"{summary['images']} images, {summary['references']} references: " +
          ", ".join(f"{k} {summary[k]:.4g}" for k in ("clip-t", "clip-i", "dino") if k in summary))
    if args.out:
        atomic_write_json({"summary": summary, "images": scores.per_image(), "folder": scores.folder,
                           "clip_model": args.clip_model, "dino_model": args.dino_model,
                           "references": args.references}, Path(args.out))
        print(f"scores in {args.out}")
    return 0
