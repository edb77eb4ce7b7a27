"""The second seed project's DreamBooth workflow on the shipped base model, against diffusers' example loop, judged.

    python scripts/dreambooth_proof.py OUT [--steps 800] [--first-seed 2000] [--loops ours reference]
        [--prior ID=WEIGHT[,PROMPTS]] ... [--record docs/results/data/dreambooth.json]

Two named monsters the base model never saw ('tuki', 'bnh'), 10 renders each in varied scenes and emotions,
trained in one run on the class 'monster'. In one process, on the same renders, steps, batch, learning rate and
training seed: conceptlab's DreamBooth ("ours": cached latents, each render's caption, prior preservation with
each subject's own prior weight and class prompts, --prior) and a loop built the way diffusers'
examples/dreambooth/train_dreambooth.py works with its multi-subject variant ("reference":
benchmarks.bench_dreambooth.ReferenceDreamBooth: VAE and text encoder at every step, one fixed prompt per
subject, class images of "a monster" at the script's prior weight 1.0). --loops no-prior adds ours without prior
preservation. Each loop is judged over 2 subjects x 4 emotions x 5 scenes x 3 seeds = 120 generations of
"a sticker of a <emotion> <id> monster <scene>" (seeds --first-seed..+2): identity, emotion and scene, every
metric per subject; and on 48 generations of the bare class prompt "a monster" (seeds --first-seed+500..): the
share judged to be a subject. The autoencoder's round-trip ceiling for each subject (renders in the same emotions
and scenes through the VAE, judged) is measured in the same run. Choose settings on --first-seed 1000, report
on 2000. The measures are the library's (conceptlab.evaluation.recipes.dreambooth). Training levers for ours:
--per-emotion N renders each subject N times in each emotion instead of --images drawn at random (both loops
train on them), --timestep-bias favours low-noise or noisy training timesteps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ holds the reference loop

from benchmarks.bench_dreambooth import ReferenceDreamBooth  # noqa: E402
from conceptlab.concepts.soup import soup_runs  # noqa: E402
from conceptlab.errors import InputError  # noqa: E402
from conceptlab.evaluation.judge import load_features_judge, load_judge  # noqa: E402
from conceptlab.evaluation.recipes import dreambooth as R  # noqa: E402
from conceptlab.imaging import make_grid  # noqa: E402
from conceptlab.models.loading import load_pipeline  # noqa: E402
from conceptlab.training.class_images import prepare_class_images  # noqa: E402
from conceptlab.training.data import load_concept_images, prepare_image, to_pixels  # noqa: E402
from conceptlab.training.diffusion import TimestepBias  # noqa: E402
from conceptlab.training.dreambooth import DreamBooth, DreamBoothConfig, SubjectConfig, train_dreambooth  # noqa: E402
from conceptlab.training.loop import TrainConfig  # noqa: E402

SUBJECTS = tuple(R.SUBJECT_RENDER_SEEDS)  # the named monsters a run may train; R.PROOF_SUBJECTS by default
EMOTIONS = ("happy", "sad", "angry", "in love")
CLASS_OFFSET = 500  # bare class prompts use seeds first_seed + 500..


def export_subject(folder: Path, ident: str, seed: int, a, masks) -> None:
    """--images renders of `ident` in varied emotions (drawn at random), or with --per-emotion N renders of each of
    the proof's emotions (only the subjects --balanced names, when it is given)."""
    count = a.per_emotion.get(ident, 0) if isinstance(a.per_emotion, dict) else a.per_emotion
    balanced = count if ident in (a.balanced or SUBJECTS) else 0
    R.export_subject_renders(folder, ident, a.render_seed.get(ident, seed), images=a.images, per_emotion=balanced,
                             masks=masks or False, cover_scenes=a.cover_scenes, scenes=a.render_scenes.get(ident))


def _by_subject(flag: str, items: list[str], convert, form: str, example: str) -> dict:
    """['tuki=V', ...] -> {'tuki': convert('V')}; an unknown subject or a value convert refuses (ValueError) names
    the flag."""
    out = {}
    for item in items:
        ident, _, value = item.partition("=")
        try:
            if ident not in SUBJECTS:
                raise ValueError(ident)
            out[ident] = convert(value)
        except ValueError:
            raise SystemExit(f"{flag} {item!r}: expected ID={form} with ID one of {SUBJECTS}, e.g. {flag} {example}") from None
    return out


def _scenes(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(n in R.SCENES for n in names):
        raise ValueError(text)
    return names


def _whole(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def parse_render_scenes(items: list[str]) -> dict[str, list[str]]:
    """['tuki=plain,beach'] -> {'tuki': ['plain', 'beach']}: the scenes a subject's training renders are drawn from."""
    return _by_subject("--render-scenes", items, _scenes, f"SCENE[,SCENE...] (scenes from {list(R.SCENES)})",
                       "tuki=plain")


def parse_render_seed(items: list[str]) -> dict[str, int]:
    """['tuki=6000'] -> {'tuki': 6000}: another draw of a subject's training renders than R.SUBJECT_RENDER_SEEDS."""
    return _by_subject("--render-seed", items, _whole, "N (a whole number)", "tuki=6000")


def parse_per_emotion(items: list[str], subjects=R.PROOF_SUBJECTS) -> int | dict[str, int]:
    """['10', 'bnh=3'] -> {'tuki': 10, 'bnh': 3}: a bare N is every trained subject's count, ID=N one subject's;
    a single bare N stays an int (the records made before per-subject counts)."""
    counts, default = {}, 0
    for item in items:
        ident, eq, n = item.rpartition("=")
        if (eq and ident not in SUBJECTS) or not n.isdigit():
            raise SystemExit(f"--per-emotion {item!r}: expected N or ID=N with ID one of {SUBJECTS} and N a whole "
                             "number, e.g. --per-emotion 10 bnh=3")
        if eq:
            counts[ident] = int(n)
        else:
            default = int(n)
    if not counts:
        return default
    return {i: counts.get(i, default) for i in SUBJECTS if (i in counts or i in subjects) and counts.get(i, default)}


def parse_prior(text: str) -> tuple[str, float, str | None]:
    """'tuki=0.1,captions' -> ('tuki', 0.1, 'captions'); the prompts part is optional."""
    ident, _, rest = text.partition("=")
    weight, _, prompts = rest.partition(",")
    if ident not in SUBJECTS or not weight:
        raise SystemExit(f"--prior {text!r}: expected ID=WEIGHT[,class|captions] with ID one of {SUBJECTS}")
    return ident, float(weight), prompts or None


def untrained_subjects(a) -> str | None:
    """Why the per-subject options name a subject that --subjects does not train (they would do nothing), or None."""
    named = {"--prior": [p.partition("=")[0] for p in a.prior], "--render-seed": list(a.render_seed),
             "--render-scenes": list(a.render_scenes), "--balanced": a.balanced or [], "--masked": a.masked or [],
             "--per-emotion": list(a.per_emotion) if isinstance(a.per_emotion, dict) else []}
    for flag, idents in named.items():
        stray = [i for i in idents if i not in a.subjects]
        if stray:
            return (f"{flag} names {', '.join(stray)}, which this run does not train (--subjects "
                    f"{' '.join(a.subjects)}): add {' '.join(stray)} to --subjects or drop it from {flag}")
    return None


def scores(pipe, judge, out: Path, name: str, a) -> dict:
    """The library's subject and class scores on this run's seeds (with which of each subject's marks they keep),
    with their grids."""
    subjects, images = R.subject_scores(pipe, judge, [(i, "monster") for i in a.subjects], EMOTIONS, tuple(R.SCENES),
                                        a.seeds, first_seed=a.first_seed, progress=False,
                                        features=load_features_judge())
    make_grid(images[::a.seeds], cols=len(R.SCENES), scale=2).save(out / f"{name}-subjects.png")
    cls, images = R.class_scores(pipe, judge, "monster", a.subjects, a.class_prompt_images,
                                 first_seed=a.first_seed + CLASS_OFFSET, progress=False, features=load_features_judge())
    make_grid(images[:24], cols=8, scale=2).save(out / f"{name}-class.png")
    return {"subjects": subjects, "class": cls}


def subject_configs(data: Path, a, priors: dict) -> list[SubjectConfig]:
    """Each subject with its captions, masks and own prior (weight, class prompts) from --prior."""
    return [SubjectConfig(i, str(data / i), "monster", captions="monster" if a.captions != "none" else None,
                          masks=str(data / i / "masks") if a.mask_weight and i in (a.masked or a.subjects) else None,
                          prior_weight=priors.get(i, (None, None))[0], class_prompts=priors.get(i, (None, None))[1])
            for i in a.subjects]


def config(data: Path, a, priors: dict, prior: bool) -> DreamBoothConfig:
    return DreamBoothConfig(
        model=a.model, subjects=subject_configs(data, a, priors), lora=a.lora, rank=a.rank,
        prior_weight=a.prior_weight, train_text_encoder=a.train_text_encoder, mask_weight=a.mask_weight or 1.0,
        prior_preservation=prior, class_images=a.class_images, class_dir=str(a.class_dir), class_prompts=a.class_prompts,
        timestep_bias=TimestepBias(a.timestep_bias, a.timestep_bias_multiplier, a.timestep_bias_portion),
        ema_decay=a.ema_decay if prior else 0.0,  # loop 'ours' alone (`prior` is true for it only)
        text_encoder_lr=a.text_encoder_lr if prior and a.train_text_encoder else None,
        caption_dropout=a.caption_dropout if prior and a.captions != "none" else 0.0,
        train=TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr or (1e-3 if a.lora else 1e-4), seed=a.seed,
                          lr_schedule=a.lr_schedule if prior else "constant", warmup_steps=a.warmup_steps if prior else 0,
                          checkpoint_every=0, preview_every=0))


def selection(a) -> list:
    """--select-by: the checkpoint-selection hook on the subjects in every emotion (2 scenes, seeds 0..)."""
    from conceptlab.training.selection import make_selection

    subjects = [SubjectConfig(i, "", "monster") for i in a.subjects]
    return [make_selection(a.select_by, a.validate_every, subjects=subjects, seeds=a.validation_seeds,
                           emotions=EMOTIONS)]


def train_reference(data: Path, a) -> tuple[object, float]:
    """diffusers' loop on the same renders, steps, batch, learning rate and seed: fixed prompts 'a tuki monster',
    class images of 'a monster' (the same folder ours draws its plain class prompt from) at --reference-prior-weight."""
    pipe = load_pipeline(a.model)
    cfg = DreamBoothConfig(model=a.model, subjects=[SubjectConfig(i, str(data / i), "monster") for i in a.subjects],
                           lora=a.lora, rank=a.rank, train_text_encoder=a.train_text_encoder,
                           train=TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr or (1e-3 if a.lora else 1e-4)))
    method = DreamBooth(pipe, cfg)
    size = method.res
    pixels = [to_pixels([prepare_image(im, size) for im in load_concept_images(data / i, "--subject")])
              for i in a.subjects]
    made = prepare_class_images(pipe, "a monster", a.class_images, a.class_dir, a.model or "sticker_base")
    class_pixels = to_pixels([prepare_image(im, size) for im in made])
    opt = torch.optim.AdamW(method.parameters(), lr=cfg.train.lr, weight_decay=1e-2)  # the script's defaults
    ref = ReferenceDreamBooth(method, pixels, opt, [class_pixels] * len(a.subjects), a.reference_prior_weight)
    gen, t0 = torch.Generator().manual_seed(a.seed), time.perf_counter()
    for _ in range(a.steps):
        ref.step(a.batch_size, gen)
    return pipe, time.perf_counter() - t0


def run(a) -> dict:
    out, judge = a.out, load_judge()
    masks = a.masks if a.mask_weight else None
    priors = {i: (w, p) for i, w, p in map(parse_prior, a.prior)}
    report = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "record"},
              "subjects": list(a.subjects), "seeds": [a.first_seed, a.first_seed + a.seeds - 1],
              "class_seeds": [a.first_seed + CLASS_OFFSET, a.first_seed + CLASS_OFFSET + a.class_prompt_images - 1],
              "loops": {}}
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    base = load_pipeline(a.model)
    for ident in a.subjects:
        export_subject(data / ident, ident, R.SUBJECT_RENDER_SEEDS[ident], a, masks)
        if a.captions == "varying":
            R.sticker_captions(data / ident)
        if a.drop_lost_renders:
            report.setdefault("dropped_renders", {})[ident] = R.drop_lost_renders(data / ident, ident, base.vae, judge)
    save = lambda: (out / "dreambooth-proof.json").write_text(json.dumps(report, indent=1))  # noqa: E731
    report["ceiling"] = R.subject_ceilings(base.vae, judge, a.subjects, EMOTIONS, tuple(R.SCENES),
                                           features=load_features_judge())
    print("ceiling", json.dumps(report["ceiling"]), flush=True)
    if a.baseline:
        cls, images = R.class_scores(base, judge, "monster", a.subjects, a.class_prompt_images,
                                     first_seed=a.first_seed + CLASS_OFFSET, progress=False)
        report["base"] = {"class": cls}
    del base
    for loop in a.loops:
        if loop == "reference":
            pipe, secs = train_reference(data, a)
            pipe.save_pretrained(out / loop / "pipeline")  # as ours keeps its own: later scorings load both
        else:
            hooks = selection(a) if loop == "ours" and a.select_by else []
            pipe, result = train_dreambooth(config(data, a, priors, loop == "ours"), out / loop, hooks=hooks)
            secs = result.seconds
            if hooks:  # judge the checkpoint the validation set chose (seeds 0.., apart from the judged ones)
                chosen = json.loads((out / loop / "selected" / "selection.json").read_text())
                report["selection"] = {k: chosen[k] for k in ("select_by", "step", "score", "scores", "history")}
                pipe = load_pipeline(str(out / loop / "selected" / "pipeline"))
        pipe.set_progress_bar_config(disable=True)
        report["loops"][loop] = {"train_seconds": round(secs, 1), **scores(pipe, judge, out, loop, a)}
        s = report["loops"][loop]
        print(loop, f"{secs:.0f}s", json.dumps({i: {k: v for k, v in m.items() if k != "images"}
                                                 for i, m in s["subjects"]["per_subject"].items()}),
              "class judged a subject", s["class"]["judged_as_subject"], flush=True)
        save()
    report["floors"] = R.proof_floors(report)
    save()
    print_floors(report)
    return report


def record(out: Path, page: Path, model_name: str, setup: str | None, name: str | None) -> None:
    """Adds the finished run's records (one per loop) to the DreamBooth results page's JSON."""
    report = json.loads((out / "dreambooth-proof.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    date = time.strftime("%Y-%m-%d", time.localtime((out / "dreambooth-proof.json").stat().st_mtime))
    records = R.proof_records(report, date=date, commit=commit, model=model_name, setup=setup, name=name)
    data = R.merge_proof_records(json.loads(page.read_text()), records)
    page.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"{len(records)} records into {page}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="the training seed, the same for every loop; several train one run each (into OUT/seed-N) "
                         "and pool their scores, since runs vary with it")
    ap.add_argument("--soup", action="store_true",
                    help="with several --seed (or --pool RUN...): judge the weight soup of the runs' own pipelines "
                         "(conceptlab concepts soup) on --first-seed instead of pooling their judgments")
    ap.add_argument("--pool", type=Path, nargs="+", default=None, metavar="RUN",
                    help="pool the finished runs (their OUT folders) of one command that differ only in --seed into "
                         "OUT/dreambooth-proof.json, e.g. runs trained side by side; no training")
    ap.add_argument("--first-seed", type=int, default=2000,
                    help="judged generations use seeds FIRST.., class prompts FIRST+500..; choose on 1000")
    ap.add_argument("--seeds", type=int, default=3,
                    help="seeds per subject x emotion x scene: 3 gives 2 x 4 x 5 x 3 = 120 judged generations per loop")
    ap.add_argument("--class-prompt-images", type=int, default=48, help="judged generations of the bare class prompt")
    ap.add_argument("--loops", nargs="+", default=["ours", "reference"], choices=["ours", "reference", "no-prior"])
    ap.add_argument("--subjects", nargs="+", choices=SUBJECTS, default=list(R.PROOF_SUBJECTS),
                    help="the subjects trained together in one run (default: tuki bnh); one alone, or a third beside "
                         "them, shows what the others do to it")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--model", default=None, help="default: the shipped base model")
    ap.add_argument("--train-text-encoder", action="store_true")
    ap.add_argument("--captions", choices=("none", "full", "varying"), default="none",
                    help="ours trains on each render's caption ('monster' -> 'ID monster'): 'full' is the render's own "
                         "caption (colour included), 'varying' names only what varies (emotion, scene), so the "
                         "subject's fixed look is left to the identifier")
    ap.add_argument("--lr", type=float, default=None, help="both loops; default 1e-3 with --lora, else 1e-4")
    ap.add_argument("--prior-weight", type=float, default=1.0, help="ours, for subjects without their own --prior")
    ap.add_argument("--prior", action="append", default=[], metavar="ID=WEIGHT[,PROMPTS]",
                    help="a subject's own prior in ours: its class images' loss weight and class prompts (class or "
                         "captions), e.g. --prior tuki=0.1,captions --prior bnh=0.3")
    ap.add_argument("--reference-prior-weight", type=float, default=1.0, help="diffusers' --prior_loss_weight default")
    ap.add_argument("--class-images", type=int, default=100, help="per class-prompt pool (diffusers' default 100)")
    ap.add_argument("--class-dir", type=Path, default=None,
                    help="default OUT/class-images; another run's folder reuses its images (the same base model)")
    ap.add_argument("--images", type=int, default=10, help="renders per subject (the issue: 8-12)")
    ap.add_argument("--per-emotion", nargs="+", default=0, metavar="N|ID=N",
                    help="instead of --images drawn at random: this many renders of each subject in each emotion; "
                         "ID=N sets one subject's count (--per-emotion 10 bnh=3: tuki 10, bnh 3)")
    ap.add_argument("--cover-scenes", action="store_true",
                    help="with --per-emotion: the renders' scenes cycle through every scene (emotion k mod 4 with "
                         "scene k mod 5), instead of scenes drawn at random")
    ap.add_argument("--render-scenes", action="append", default=[], metavar="ID=SCENE[,SCENE]",
                    help="draw a subject's training renders only in these scenes, e.g. --render-scenes tuki=plain "
                         "(the judged prompts still ask for every scene)")
    ap.add_argument("--render-seed", action="append", default=[], metavar="ID=N",
                    help=f"another draw of a subject's training renders (defaults: {R.SUBJECT_RENDER_SEEDS})")
    ap.add_argument("--drop-lost-renders", action="store_true",
                    help="train on the renders whose autoencoder round trip the judge still reads as their subject "
                         "only (the rest would teach latents of another look)")
    ap.add_argument("--balanced", nargs="+", choices=SUBJECTS, default=None,
                    help="with --per-emotion: only these subjects' renders are balanced (default: all)")
    ap.add_argument("--timestep-bias", choices=("none", "earlier", "later"), default="none",
                    help="ours: favour low-noise (earlier) or noisy (later) training timesteps")
    ap.add_argument("--timestep-bias-multiplier", type=float, default=2.0)
    ap.add_argument("--timestep-bias-portion", type=float, default=0.25)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the untrained model's class-prompt scores")
    ap.add_argument("--class-prompts", choices=("class", "captions"), default="class",
                    help="ours, for subjects without their own --prior prompts: captions draws class images also from "
                         "the captions with the identifier dropped")
    ap.add_argument("--mask-weight", type=float, default=None,
                    help="train ours with a mask per render (--masks), the subject's pixels weighted this much")
    ap.add_argument("--masked", nargs="+", choices=SUBJECTS, default=None,
                    help="with --mask-weight: only these subjects' losses are weighted by their masks (default: all)")
    ap.add_argument("--masks", choices=("silhouette", "face"), default="silhouette",
                    help="with --mask-weight: the silhouette, or the face white and the rest of the body grey")
    ap.add_argument("--select-by", default=None, metavar="SPEC",
                    help="ours: keep the checkpoint that scores best on a validation set (every emotion, 2 scenes, "
                         "seeds 0..), e.g. identity=1,emotion=1; the proof judges that checkpoint")
    ap.add_argument("--ema-decay", type=float, default=0.0,
                    help="ours: judge (and save) the moving average of the weights, e.g. 0.99")
    ap.add_argument("--text-encoder-lr", type=float, default=None,
                    help="ours, with --train-text-encoder: the text encoder's own learning rate (default: --lr)")
    ap.add_argument("--caption-dropout", type=float, default=0.0,
                    help="ours, with captions: the share of examples trained on the bare prompt 'a ID monster'")
    ap.add_argument("--lr-schedule", choices=("constant", "constant_with_warmup", "linear", "cosine"),
                    default="constant", help="ours: the learning rate's schedule (the reference keeps diffusers' "
                                             "default, constant)")
    ap.add_argument("--warmup-steps", type=int, default=0, help="ours: steps of linear warm-up")
    ap.add_argument("--validate-every", type=int, default=200)
    ap.add_argument("--validation-seeds", type=int, default=2)
    ap.add_argument("--record", metavar="PAGE_JSON", default=None,
                    help="add OUT/dreambooth-proof.json's numbers to a results page's JSON and stop (no training)")
    ap.add_argument("--model-name", default="v9", help="the model's name in the record")
    ap.add_argument("--setup", default=None, help="with --record: the settings' words in the table")
    ap.add_argument("--name", default=None, help="with --record: a word in the records' ids, telling runs apart")
    a = ap.parse_args()
    a.subjects = list(dict.fromkeys(a.subjects))
    a.per_emotion = parse_per_emotion(a.per_emotion, a.subjects) if a.per_emotion else 0
    a.render_scenes, a.render_seed = parse_render_scenes(a.render_scenes), parse_render_seed(a.render_seed)
    if a.record:
        return record(a.out, Path(a.record), a.model_name, a.setup, a.name)
    if a.select_by and a.lora:  # the chosen step is read back as OUT/ours/selected/pipeline, a full fine-tune's
        ap.error("--select-by judges a full fine-tune's chosen checkpoint; drop --lora or --select-by")
    if a.cover_scenes and not a.per_emotion:
        ap.error("--cover-scenes arranges the --per-emotion renders over the scenes; give --per-emotion too")
    if a.cover_scenes and a.render_scenes:
        ap.error("--cover-scenes spreads the renders over every scene; --render-scenes limits them: give one")
    if a.drop_lost_renders and a.mask_weight:
        ap.error("--drop-lost-renders removes renders but not their masks; drop --mask-weight or it")
    if a.masked and not a.mask_weight:
        ap.error("--masked names the subjects whose masks weight the loss; give --mask-weight too")
    if a.text_encoder_lr and not a.train_text_encoder:
        ap.error("--text-encoder-lr is the text encoder's own rate; give --train-text-encoder too")
    if a.caption_dropout and a.captions == "none":
        ap.error("--caption-dropout swaps captions for the bare prompt; use --captions varying or full")
    a.class_dir = a.class_dir or a.out / "class-images"
    defaults = {k: ap.get_default(k) for k in vars(a)}
    if a.pool:
        try:
            reports = [json.loads((d / "dreambooth-proof.json").read_text()) for d in a.pool]
            return soup(a, a.pool, reports, defaults) if a.soup else pool(a.out, reports, defaults)
        except (InputError, FileNotFoundError) as e:
            ap.error(str(e))
    if why := untrained_subjects(a):
        ap.error(why)
    if len(a.seed) == 1:
        if a.soup:
            ap.error("--soup averages several runs' weights; give several --seed, or --pool RUN...")
        a.seed = a.seed[0]
        return run(a)
    runs = [a.out / f"seed-{s}" for s in a.seed]
    reports = [run(argparse.Namespace(**{**vars(a), "seed": s, "out": d, "soup": False})) for s, d in zip(a.seed, runs)]
    soup(a, runs, reports, defaults) if a.soup else pool(a.out, reports, defaults)


def soup(a, runs: list[Path], reports: list[dict], defaults: dict) -> dict:
    """The weight soup (conceptlab.concepts.soup) of proof runs that differ only in their training seed, as one run
    judged on a's seeds (the runs' own judgments are kept under `runs`); ours only."""
    R.check_seed_runs(reports, defaults, "--soup", judged=False)
    if any("ours" not in r["loops"] for r in reports):
        raise InputError("--soup", [str(d) for d in runs], "holds a run without conceptlab's loop",
                         "Soup runs made with --loops ours")
    soup_runs([d / "ours" for d in runs], a.out / "ours")
    a = argparse.Namespace(**{**vars(a), "subjects": reports[0].get("subjects", list(R.PROOF_SUBJECTS))})
    pipe = load_pipeline(str(a.out / "ours" / "pipeline"))
    pipe.set_progress_bar_config(disable=True)
    judge = load_judge()
    cfg = {**reports[0]["config"], "seed": [r["config"]["seed"] for r in reports], "soup": True, "out": str(a.out),
           "loops": ["ours"], "first_seed": a.first_seed, "seeds": a.seeds, "class_prompt_images": a.class_prompt_images}
    report = {"config": cfg, "subjects": list(a.subjects), "seeds": [a.first_seed, a.first_seed + a.seeds - 1],
              "class_seeds": [a.first_seed + CLASS_OFFSET, a.first_seed + CLASS_OFFSET + a.class_prompt_images - 1],
              "ceiling": R.subject_ceilings(pipe.vae, judge, a.subjects, EMOTIONS, tuple(R.SCENES),
                                            features=load_features_judge()),  # the VAE is the base model's
              "runs": [{"seed": r["config"]["seed"], "judged_seeds": r["seeds"],
                        "identity": {"ours": {i: m["identity"] for i, m in
                                              r["loops"]["ours"]["subjects"]["per_subject"].items()}}} for r in reports]}
    secs = sum(r["loops"]["ours"]["train_seconds"] for r in reports)
    report["loops"] = {"ours": {"train_seconds": round(secs, 1), **scores(pipe, judge, a.out, "ours", a)}}
    report["floors"] = R.proof_floors(report)
    (a.out / "dreambooth-proof.json").write_text(json.dumps(report, indent=1))
    print("soup of seeds", cfg["seed"], json.dumps({i: {k: v for k, v in m.items() if k in ("identity", "emotion", "scene")}
                                                   for i, m in report["loops"]["ours"]["subjects"]["per_subject"].items()}))
    print_floors(report)
    return report


def pool(out: Path, reports: list[dict], defaults: dict | None = None) -> dict:
    """Runs that differ only in their training seed, as one report (R.pool_proof_reports)."""
    report = R.pool_proof_reports(reports, defaults)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dreambooth-proof.json").write_text(json.dumps(report, indent=1))
    for run_ in report["runs"]:
        print("seed", run_["seed"], json.dumps(run_["identity"]))
    print_floors(report)
    return report


def print_floors(report: dict) -> None:
    for bar in report["floors"]:
        print(f"{'ok ' if bar['holds'] else 'NO '} {bar['what']}: {bar['value']:.3f} ({bar['rule']})")


if __name__ == "__main__":
    main()
