"""Jobs: state transitions, the one-at-a-time queue, cancel with SIGTERM, and recovery after a restart.

The training CLI is replaced by a stand-in process (conftest.fake_python) so these run in a second; the
real CLI runs in test_app.py."""

import json
import os
import subprocess
import sys

import pytest

from conceptlab.errors import InputError
from conceptlab.studio.jobs import Job, JobRunner, TrainSettings, outcome_from_log, ti_command
from conceptlab.studio.progress import read_progress


def _started(ws, job_id, text="1/10", timeout=30):
    """Waits until the stand-in has printed `text` (its SIGTERM handler is set by then)."""
    import time

    deadline = time.monotonic() + timeout
    while text not in (ws.root / "jobs" / job_id / "log.txt").read_text():
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.05)


def _settings(upload, **kw):
    return TrainSettings(**{**vars(TrainSettings.defaults()), "token": "<broc>", "images": upload, "steps": 2, **kw})


def test_transitions():
    job = Job(id="j", kind="ti", settings={}, command=[], run_dir="runs/j")
    for status in ("running", "cancelled", "queued", "running", "interrupted", "queued", "running", "done"):
        job.move(status)
    for status in ("queued", "running", "failed"):
        with pytest.raises(InputError, match="cannot go from done"):
            job.move(status)


def test_command_is_the_cli_with_checked_settings(ws, upload):
    s = _settings(upload, init="broccoli", checkpoint_every=1, preview_every=1)
    cmd = ti_command(ws, s, ws.root / "runs" / "r", python="py")
    assert cmd[:5] == ["py", "-m", "conceptlab.cli.main", "train", "ti"]
    assert cmd[cmd.index("--concept") + 1] == f"<broc>={ws.root / 'uploads' / upload},init=broccoli"
    assert cmd[cmd.index("--validation-prompt") + 1] == "a sticker of a <broc>"
    assert cmd[-2:] == ["--out", str(ws.root / "runs" / "r")]


def test_defaults_are_the_librarys():
    from conceptlab.training.textual_inversion import TextualInversionConfig

    d, lib = TrainSettings.defaults(), TextualInversionConfig().train
    assert (d.steps, d.lr, d.batch_size) == (lib.steps, lib.lr, lib.batch_size)


@pytest.mark.parametrize("field,value,match", [("token", "../x", "one new word"), ("images", "../../etc", "may hold"),
                                               ("images", "missing", "does not exist"), ("steps", 0, "out of range"),
                                               ("lr", 0, "out of range"), ("init", "a,b", "plain word"),
                                               ("name", "/abs", "may hold")])
def test_bad_settings_are_refused_before_a_job_exists(ws, upload, fake_python, field, value, match):
    runner = JobRunner(ws, python=fake_python)
    with pytest.raises(InputError, match=match):
        runner.submit(_settings(upload, **{field: value}))
    assert runner.jobs() == []


def test_one_job_at_a_time_then_the_next(ws, upload, fake_python):
    runner = JobRunner(ws, python=fake_python, env={"FAKE_MODE": "slow"})
    first = runner.submit(_settings(upload, name="first"))
    second = runner.submit(_settings(upload, name="second"))
    assert [j.status for j in runner.jobs()] == ["running", "queued"]
    assert runner.queue_position(second.id) == 1 and runner.queue_position(first.id) is None
    runner.env["FAKE_MODE"] = "done"
    _started(ws, first.id)
    runner.cancel(first.id)  # SIGTERM: the stand-in "saves" and exits 143
    assert runner.wait(first.id, 30).status == "cancelled"
    done = runner.wait(second.id, 30)
    assert done.status == "done" and done.returncode == 0 and done.message.startswith("learned <t>")
    log = (ws.root / "jobs" / first.id / "log.txt").read_text()
    assert "$ " in log and "terminated at step 1" in log


def test_failure_carries_the_cli_message_and_resume_adds_resume(ws, upload, fake_python):
    runner = JobRunner(ws, python=fake_python, env={"FAKE_MODE": "fail"})
    job = runner.wait(runner.submit(_settings(upload)).id, 30)
    assert job.status == "failed" and job.message == "--concept='x': is broken. Fix it"
    runner.env["FAKE_MODE"] = "done"
    resumed = runner.resume(job.id)
    assert resumed.command[-1] == "--resume" and resumed.resumes == 1
    assert runner.wait(job.id, 30).status == "done"
    with pytest.raises(InputError, match="is done"):
        runner.resume(job.id)


def test_a_signal_from_elsewhere_is_an_interruption_and_resumes(ws, upload, fake_python):
    runner = JobRunner(ws, python=fake_python, env={"FAKE_MODE": "slow"})
    job = runner.submit(_settings(upload))
    _started(ws, job.id)
    os.kill(runner.store.load(job.id).pid, 15)  # e.g. the system shutting down: the loop saves, exits 143
    stopped = runner.wait(job.id, 30)
    assert stopped.status == "interrupted" and stopped.returncode == 143
    runner.env["FAKE_MODE"] = "done"
    runner.resume(job.id)
    assert runner.wait(job.id, 30).status == "done"


def test_cancel_a_queued_job(ws, upload, fake_python):
    runner = JobRunner(ws, python=fake_python, env={"FAKE_MODE": "slow"})
    first, second = runner.submit(_settings(upload, name="a")), runner.submit(_settings(upload, name="b"))
    assert runner.cancel(second.id).status == "cancelled"
    runner.stop()  # the studio's own shutdown: the running job is stopped and recorded as interrupted
    assert runner.store.load(first.id).status == "interrupted"


def test_restart_marks_a_dead_pid_interrupted_and_keeps_a_live_one(ws, upload, fake_python):
    runner = JobRunner(ws, python=fake_python, env={"FAKE_MODE": "slow"})
    job = runner.submit(_settings(upload))
    _started(ws, job.id)
    runner.stop(stop_jobs=False)  # the studio "dies" without stopping its child
    alive = runner.store.load(job.id)
    assert alive.status == "running"
    again = JobRunner(ws, python=fake_python)
    why = f"exit {runner._procs[job.id].poll()}, log: {(ws.root / 'jobs' / job.id / 'log.txt').read_text()[-300:]}"
    assert again.store.load(job.id).status == "running", why  # its process still runs: shown as it is
    again.poll()
    assert again.store.load(job.id).status == "running"
    os.kill(alive.pid, 9)
    runner._procs[job.id].wait()  # reap it (it is the first runner's child)
    again.poll()
    recovered = again.store.load(job.id)
    assert recovered.status == "interrupted" and "resume" in recovered.message


def test_restart_with_a_fake_dead_pid(ws):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    folder = ws.root / "jobs" / "old"
    folder.mkdir()
    record = Job(id="old", kind="ti", settings={}, command=["x"], run_dir="runs/old", status="running", pid=pid)
    (folder / "job.json").write_text(json.dumps(vars(record)))
    (folder / "log.txt").write_text("train:  50%|#  | 5/10 [00:05<00:05, 1.0it/s, loss=0.3]\n")
    runner = JobRunner(ws, python="unused")
    assert runner.store.load("old").status == "interrupted"


def test_outcome_from_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("x\rconceptlab train ti: error: --steps=0: is out of range. Pass 1\n")
    assert outcome_from_log(log) == ("failed", "--steps=0: is out of range. Pass 1")
    log.write_text("learned <a> in 3 steps\n")
    assert outcome_from_log(log)[0] == "done"
    assert outcome_from_log(tmp_path / "none.txt")[0] == "interrupted"


def test_progress_from_log_and_checkpoint(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log.txt"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "checkpoints" / "step-000002" / "loop.json").write_text(json.dumps({"step": 2, "steps": 4, "losses": [1.0, 0.9]}))
    (run / "checkpoints" / "step-000004.tmp").mkdir()
    (run / "previews").mkdir()
    (run / "previews" / "step-000002.png").write_bytes(b"")
    log.write_text("[t] $ old\rtrain:  50%|#| 9/9 [00:01<00:00, loss=5.0]\n[t] $ cmd\n"
                   "\rtrain:  75%|##  | 3/4 [00:03<00:01,  1.0it/s, loss=0.9000, lr=5e-3]"
                   "\rtrain:  75%|##  | 3/4 [00:03<00:01,  1.0it/s, loss=0.8000, lr=5e-3]")
    p = read_progress(run, log)
    assert (p.step, p.total, p.eta_seconds, p.checkpoint) == (3, 4, 1.0, 2)
    assert p.losses == {1: 1.0, 2: 0.9, 3: 0.8} and p.preview.name == "step-000002.png"
    assert p.line() == "step 3 of 4, about 0:01 left, loss 0.8000, checkpoint at step 2"


def test_log_tail_shows_what_a_terminal_shows(tmp_path):
    from conceptlab.studio.jobs import log_tail

    log = tmp_path / "log.txt"
    log.write_text("start\n\x1b[Atrain: 1/3\rtrain: 2/3\rtrain: 3/3\ndone\n")
    assert log_tail(log, 10) == "start\ntrain: 3/3\ndone"
    assert log_tail(log, 1) == "done" and log_tail(tmp_path / "none", 5) == ""


def test_progress_from_the_loops_jsonl_when_there_is_one(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": k, "steps": 10, "loss": 1 / k, "lr": 5e-3, "time": 100.0 + 2 * k} for k in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    p = read_progress(run, tmp_path / "no-log.txt")
    assert (p.step, p.total, p.eta_seconds) == (4, 10, 12.0) and p.losses[2] == 0.5


def _cli_config(cmd):
    """The config `conceptlab train ...` builds from a command line the studio wrote (the CLI's own parser)."""
    from conceptlab.cli import train
    from conceptlab.cli.main import build_parser

    args = build_parser().parse_args(cmd[3:])  # after 'python -m conceptlab.cli.main'
    return {"dreambooth": train.dreambooth_config, "pivotal": train.pivotal_config, "ti": train.ti_config}[cmd[4]](args)


def test_dreambooth_command_parses_to_the_settings_asked_for(ws, upload):
    from conceptlab.studio.jobs import DreamBoothSettings, dreambooth_command

    s = DreamBoothSettings(**{**vars(DreamBoothSettings.defaults()), "identifier": "tuki", "class_word": "broccoli",
                              "images": upload, "rank": 8, "train_text_encoder": True, "prior_preservation": True,
                              "class_images": 7, "prior_weight": 0.5, "steps": 3, "lr": 2e-4, "seed": 5})
    cfg = _cli_config(dreambooth_command(ws, s, ws.root / "runs" / "r", python="py"))
    (subject,) = cfg.subjects
    assert (subject.identifier, subject.class_word, subject.folder) == ("tuki", "broccoli", str(ws.root / "uploads" / upload))
    assert (cfg.lora, cfg.rank, cfg.train_text_encoder, cfg.prior_preservation, cfg.class_images, cfg.prior_weight) == \
        (True, 8, True, True, 7, 0.5)
    assert (cfg.train.steps, cfg.train.lr, cfg.train.seed, cfg.train.batch_size) == (3, 2e-4, 5, 1)
    full = _cli_config(dreambooth_command(ws, DreamBoothSettings(**{**vars(s), "lora": False}), ws.root / "r", "py"))
    assert full.lora is False


def test_pivotal_command_parses_to_the_settings_asked_for(ws, upload):
    from conceptlab.studio.jobs import PivotalSettings, pivotal_command

    s = PivotalSettings(**{**vars(PivotalSettings.defaults()), "identifier": "<tuki>", "class_word": "broccoli",
                           "images": upload, "rank": 2, "token_lr": 1e-3, "token_steps": 1, "steps": 3})
    cfg = _cli_config(pivotal_command(ws, s, ws.root / "runs" / "r", python="py"))
    assert cfg.subjects[0].identifier == "<tuki>" and (cfg.rank, cfg.token_lr, cfg.token_steps, cfg.train.steps) == \
        (2, 1e-3, 1, 3)
    assert cfg.lora is True
    full = _cli_config(pivotal_command(ws, PivotalSettings(**{**vars(s), "full_fine_tune": True}), ws.root / "r", "py"))
    assert full.lora is False and full.token_init == "class"
    for start in ("random", "creature"):
        cmd = pivotal_command(ws, PivotalSettings(**{**vars(s), "token_init": start}), ws.root / "r", "py")
        assert _cli_config(cmd).token_init == start


@pytest.mark.parametrize("kind,field,value,match", [
    ("dreambooth", "identifier", "../x", "one new word"), ("dreambooth", "class_word", "a/b", "plain word"),
    ("dreambooth", "rank", 0, "--rank"), ("dreambooth", "images", "missing", "does not exist"),
    ("pivotal", "identifier", "tuki", "angle brackets"), ("pivotal", "token_steps", 5, "leaves none"),
    ("pivotal", "token_init", "runs/x.safetensors", "token starts from='runs/x.safetensors': looks like a file"),
    ("dreambooth", "text_encoder_lr", 1e-5, r"text-encoder learning rate=1e-05: is set but the text encoder does not "
                                            r"train\. Tick the text-encoder box"),
    ("pivotal", "text_encoder_lr", 1e-5, r"text-encoder learning rate=1e-05: is set but the text encoder does not"),
    ("dreambooth", "text_encoder_lr", -1e-4, r"text-encoder learning rate=-0.0001: is out of range"),
    ("pivotal", "text_encoder_lr", 2.0, r"text-encoder learning rate=2.0: is past the limit 1"),
    ("dreambooth", "caption_dropout", 0.3, r"caption dropout=0.3: needs subjects trained on captions\. Set a captions "
                                           r"word under Advanced"),
    ("pivotal", "caption_dropout", 0.3, r"caption dropout=0.3: needs subjects trained on captions"),
    ("dreambooth", "caption_dropout", 1.5, r"caption dropout=1.5: is past the limit 1"),
    ("pivotal", "caption_dropout", -0.1, r"caption dropout=-0.1: is out of range")])
def test_bad_dreambooth_and_pivotal_settings_are_refused(ws, upload, fake_python, kind, field, value, match):
    from conceptlab.studio.jobs import DreamBoothSettings, PivotalSettings

    cls = {"dreambooth": DreamBoothSettings, "pivotal": PivotalSettings}[kind]
    base = {**vars(cls.defaults()), "identifier": "<tuki>" if kind == "pivotal" else "tuki", "class_word": "broccoli",
            "images": upload, "steps": 3}
    runner = JobRunner(ws, python=fake_python)
    with pytest.raises(InputError, match=match):
        runner.submit(cls(**{**base, field: value}))
    assert runner.jobs() == []


def test_a_dreambooth_run_that_ends_well_is_done(ws, upload, fake_python, tmp_path):
    """`train dreambooth` ends with 'trained ...', not 'learned ...': the log still reads as done."""
    log = tmp_path / "log.txt"
    log.write_text("train: 100%|###| 3/3\ntrained tuki for 3 steps; LoRA in runs/x/lora\n")
    assert outcome_from_log(log) == ("done", "trained tuki for 3 steps; LoRA in runs/x/lora")


@pytest.fixture
def captioned(ws, concept_dirs):
    """uploads/capt: the broccoli images, each with a caption naming 'broccoli' (uploaded as NAME.txt)."""
    import shutil

    files = []
    for path in sorted((concept_dirs / "broccoli").glob("*.png")):
        shutil.copy(path, ws.root.parent / path.name)
        (ws.root.parent / f"{path.stem}.txt").write_text(f"a sticker of a happy green broccoli, {path.stem}")
        files += [ws.root.parent / path.name, ws.root.parent / f"{path.stem}.txt"]
    ws.store_images(files, "capt")
    return "capt"


def _advanced(**kw):
    from conceptlab.studio.jobs import Advanced

    return Advanced(**{"mixed_precision": "bf16", "gradient_checkpointing": True, "gradient_accumulation": 2,
                       "lr_schedule": "cosine", "warmup_steps": 5, "buckets": True, "captions": "broccoli",
                       "timestep_bias": "earlier", "timestep_bias_multiplier": 3.0, "select_by": "identity",
                       "validate_every": 2, "report_to": "tensorboard", "optimizer": "adafactor", "class_steps": 12,
                       **kw})


def _train_flags(cfg):
    t = cfg.train
    return (t.mixed_precision, t.gradient_checkpointing, t.gradient_accumulation, t.lr_schedule, t.warmup_steps,
            t.report_to, t.optimizer)


def test_advanced_settings_parse_to_the_same_config_for_every_kind(ws, captioned):
    """The Advanced accordion's settings reach each CLI as the flags of the same names: the configs the CLI's
    own parser builds from the studio's command lines hold them."""
    from conceptlab.cli.main import build_parser
    from conceptlab.studio.jobs import DreamBoothSettings, PivotalSettings, dreambooth_command, pivotal_command, ti_command

    db = DreamBoothSettings(**{**vars(DreamBoothSettings.defaults()), "identifier": "tuki", "class_word": "broccoli",
                               "images": captioned, "ema_decay": 0.99, "advanced": _advanced(select_by="")})
    pv = PivotalSettings(**{**vars(PivotalSettings.defaults()), "identifier": "<tuki>", "class_word": "broccoli",
                            "images": captioned, "train_text_encoder": True, "advanced": _advanced(select_by=""),
                            "ema_decay": 0.95})
    ti = TrainSettings(**{**vars(TrainSettings.defaults()), "token": "<broc>", "images": captioned,
                          "advanced": _advanced(timestep_bias="none", class_steps=30)})
    run = ws.root / "runs" / "r"
    db_cfg, pv_cfg = _cli_config(dreambooth_command(ws, db, run, "py")), _cli_config(pivotal_command(ws, pv, run, "py"))
    ti_cmd = ti_command(ws, ti, run, "py")
    ti_cfg = _cli_config(ti_cmd)
    wanted = ("bf16", True, 2, "cosine", 5, "tensorboard", "adafactor")
    assert _train_flags(db_cfg) == _train_flags(pv_cfg) == _train_flags(ti_cfg) == wanted
    assert db_cfg.buckets.enabled and pv_cfg.buckets.enabled and ti_cfg.buckets.enabled
    assert db_cfg.subjects[0].captions == pv_cfg.subjects[0].captions == ti_cfg.concepts[0].captions == "broccoli"
    assert (db_cfg.timestep_bias.strategy, db_cfg.timestep_bias.multiplier) == ("earlier", 3.0)
    assert pv_cfg.timestep_bias.strategy == "earlier" and ti_cfg.train.lr_schedule == "cosine"
    assert db_cfg.ema_decay == 0.99 and pv_cfg.train_text_encoder is True and pv_cfg.ema_decay == 0.95
    assert db_cfg.class_steps == pv_cfg.class_steps == 12 and "--class-steps" not in ti_cmd
    from conceptlab.studio.jobs import Advanced
    from conceptlab.training.dreambooth import DreamBoothConfig

    assert Advanced().class_steps == DreamBoothConfig().class_steps  # the form starts at the library's default
    args = build_parser().parse_args(ti_cmd[3:])
    assert (args.select_by, args.validate_every) == ("identity", 2)


@pytest.mark.parametrize("kind,change,match", [
    ("ti", {"mixed_precision": "fp8"}, r"mixed precision='fp8'"),
    ("ti", {"optimizer": "lion"}, r"optimizer='lion'"),
    ("ti", {"timestep_bias": "earlier"}, r"timestep bias='earlier': textual inversion does not take one"),
    ("ti", {"class_steps": 12}, r"class steps=12: textual inversion draws no class images"),
    ("pivotal", {"class_steps": 0}, r"class steps=0"),
    ("dreambooth", {"captions": "cat"}, r"does not contain 'cat'"),
    ("dreambooth", {"captions": "two words"}, r"captions word='two words': is not one word"),
    ("dreambooth", {"select_by": "likeness"}, r"likeness"),
    ("dreambooth", {"select_by": "clip-t"}, r"needs CLIP weights"),
    ("dreambooth", {"ema": 0.99}, r"EMA decay=0.99: and checkpoint selection"),
    ("pivotal", {"timestep_bias_multiplier": 0}, r"bias multiplier=0"),
    ("dreambooth", {"report_to": "wandb"}, r"report to='wandb'"),
    ("pivotal", {"lr_schedule": "steps"}, r"learning-rate schedule='steps'"),
])
def test_bad_advanced_settings_are_refused_before_a_job_exists(ws, captioned, fake_python, kind, change, match):
    from conceptlab.studio.jobs import DreamBoothSettings, PivotalSettings

    ema = change.pop("ema", 0.0)
    adv = _advanced(**{"timestep_bias": "none" if kind == "ti" else "earlier", **change})
    if kind == "ti":
        settings = TrainSettings(**{**vars(TrainSettings.defaults()), "token": "<broc>", "images": captioned,
                                    "advanced": adv})
    else:
        cls = DreamBoothSettings if kind == "dreambooth" else PivotalSettings
        extra = {"ema_decay": ema} if kind == "dreambooth" else {}
        settings = cls(**{**vars(cls.defaults()), "identifier": "<tuki>" if kind == "pivotal" else "tuki",
                          "class_word": "broccoli", "images": captioned, "advanced": adv, **extra})
    runner = JobRunner(ws, python=fake_python)
    with pytest.raises(InputError, match=match):
        runner.submit(settings)
    assert runner.jobs() == []


def test_jobs_train_on_the_studios_device_and_dtype(ws, upload, fake_python):
    """A studio started with --device cuda --dtype float16 trains there so: every job's command asks for both, and
    the CLI's own parser reads them (CPU and the saved dtype by default)."""
    from conceptlab.cli.main import build_parser

    job = JobRunner(ws, python=fake_python, device="cuda", dtype="float16").submit(_settings(upload))
    args = build_parser().parse_args(job.command[job.command.index("train"):])
    assert (args.device, args.dtype) == ("cuda", "float16")
    plain = JobRunner(ws, python=fake_python).submit(_settings(upload, name="plain"))
    assert "--device" not in plain.command and "--dtype" not in plain.command
    from conceptlab.studio.app import Studio

    studio_args = build_parser().parse_args(["studio", "--dtype", "bfloat16"])
    studio = Studio(ws.root.parent / "ws-dtype", device=studio_args.device, dtype=studio_args.dtype)
    assert studio.cache.dtype == studio.runner.dtype == "bfloat16"  # the page's pipeline and the jobs alike


def test_a_job_starting_on_the_studios_gpu_frees_the_pages_pipeline(ws, upload, fake_python, tiny_dir):
    """on_start runs before each job's process; a studio on a CUDA device drops its loaded pipeline there, so a
    job does not share the GPU with the page's pipeline (reloaded on the next generation)."""
    from conceptlab.studio.app import Studio

    started = []
    job = JobRunner(ws, python=fake_python, on_start=started.append).submit(_settings(upload))
    assert [j.id for j in started] == [job.id]
    studio = Studio(ws.root.parent / "ws2", device="cuda")
    studio.cache.device = None  # this machine may have no GPU: load on the CPU, keep the studio's wiring
    studio.cache.get(str(tiny_dir))
    assert studio.cache._pipe is not None
    studio.runner.on_start(job)
    assert studio.cache._pipe is None and Studio(ws.root.parent / "ws3").runner.on_start is None


def test_more_subjects_train_in_the_same_run_with_their_own_options(ws, upload, captioned):
    """'More subjects' lines become more --subject flags: the CLI's parser gives a two-subject config, each with
    its data set, class and options; the Advanced captions word reaches a line that names none."""
    from conceptlab.studio.jobs import DreamBoothSettings, PivotalSettings, dreambooth_command, pivotal_command

    db = DreamBoothSettings(**{**vars(DreamBoothSettings.defaults()), "identifier": "tuki", "class_word": "broccoli",
                               "images": upload, "more_subjects": f"\n bnh = {captioned} , class=monster,prior_weight=0.3\n"})
    cfg = _cli_config(dreambooth_command(ws, db, ws.root / "runs" / "r", "py"))
    assert [(s.identifier, s.class_word, s.prior_weight) for s in cfg.subjects] == [("tuki", "broccoli", None),
                                                                                      ("bnh", "monster", 0.3)]
    assert cfg.subjects[1].folder == str(ws.root / "uploads" / captioned)
    from conceptlab.studio.jobs import check_dreambooth_settings, check_pivotal_settings

    check_dreambooth_settings(ws, db)  # the settings pass the studio's own checks too
    pv = PivotalSettings(**{**vars(PivotalSettings.defaults()), "identifier": "<tuki>", "class_word": "broccoli",
                            "images": captioned, "more_subjects": f"<bnh>={captioned},class=broccoli",
                            "advanced": _advanced(select_by="", timestep_bias="none")})
    check_pivotal_settings(ws, pv)
    cfg = _cli_config(pivotal_command(ws, pv, ws.root / "runs" / "r", "py"))
    assert [s.identifier for s in cfg.subjects] == ["<tuki>", "<bnh>"] and cfg.subjects[1].captions == "broccoli"


def test_more_subjects_lines_are_read_loosely_and_inherit_the_captions_word(ws, upload, captioned):
    from conceptlab.studio.jobs import PivotalSettings, check_pivotal_settings, more_subjects, pivotal_command

    (value, cfg), = more_subjects(ws, f" bnh = {captioned} , class = monster , prior_weight = 0.3 ,")
    assert (cfg.identifier, cfg.class_word, cfg.prior_weight) == ("bnh", "monster", 0.3) and value.endswith("=0.3")
    pv = PivotalSettings(**{**vars(PivotalSettings.defaults()), "identifier": "<tuki>", "class_word": "broccoli",
                            "images": captioned, "more_subjects": f"<bnh>={captioned},class=monster,class_prompts=captions",
                            "advanced": _advanced(select_by="", timestep_bias="none")})
    check_pivotal_settings(ws, pv)  # the extra subject inherits the Advanced captions word, as the job's command does
    cfg = _cli_config(pivotal_command(ws, pv, ws.root / "runs" / "r", "py"))
    assert cfg.subjects[1].captions == "broccoli" and cfg.subjects[1].class_prompts == "captions"


@pytest.mark.parametrize("kind", ["dreambooth", "pivotal"])
def test_text_encoder_lr_and_caption_dropout_reach_the_command_only_when_set(ws, upload, captioned, kind):
    """The form's text-encoder learning rate and caption dropout become --text-encoder-lr and --caption-dropout
    only when set; the CLI's own parser gives a config holding them. Caption dropout needs captions, from the
    Advanced word or from a 'More subjects' line's own captions=WORD."""
    from conceptlab.studio.jobs import KINDS

    cls, check, command, _ = KINDS[kind]
    ident = "<tuki>" if kind == "pivotal" else "tuki"
    base = {**vars(cls.defaults()), "identifier": ident, "class_word": "broccoli", "images": captioned,
            "train_text_encoder": True, "advanced": _advanced(select_by="", timestep_bias="none")}
    plain = cls(**base)
    check(ws, plain)
    cmd = command(ws, plain, ws.root / "runs" / "r", "py")
    assert "--text-encoder-lr" not in cmd and "--caption-dropout" not in cmd
    cfg = _cli_config(cmd)
    assert cfg.text_encoder_lr is None and cfg.caption_dropout == 0.0
    s = cls(**{**base, "text_encoder_lr": 2e-5, "caption_dropout": 0.25})
    check(ws, s)
    cmd = command(ws, s, ws.root / "runs" / "r", "py")
    assert cmd[cmd.index("--text-encoder-lr") + 1] == "2e-05" and cmd[cmd.index("--caption-dropout") + 1] == "0.25"
    cfg = _cli_config(cmd)
    assert (cfg.train_text_encoder, cfg.text_encoder_lr, cfg.caption_dropout, cfg.train.lr) == \
        (True, 2e-5, 0.25, plain.lr)
    other = "<bnh>" if kind == "pivotal" else "bnh"
    only_more = cls(**{**base, "images": upload, "advanced": _advanced(select_by="", timestep_bias="none", captions=""),
                       "more_subjects": f"{other}={captioned},class=broccoli,captions=broccoli", "caption_dropout": 0.5})
    check(ws, only_more)  # the extra subject's own captions are enough
    cfg = _cli_config(command(ws, only_more, ws.root / "runs" / "r", "py"))
    assert cfg.caption_dropout == 0.5 and [x.captions for x in cfg.subjects] == [None, "broccoli"]


@pytest.mark.parametrize("kind,line,match", [
    ("dreambooth", "bnh=missing,class=monster", r"missing.*is not a data set of the workspace"),
    ("dreambooth", "bnh=../../etc,class=monster", r"more subjects"),
    ("dreambooth", "bnh=SET,class=monster,masks=/etc", r"options: class, captions, prior_weight, class_prompts"),
    ("dreambooth", "bnh=SET,class=monster,class_prompts=/etc/passwd", r"class_prompts is class or captions"),
    ("dreambooth", "tuki=SET,class=monster", r"is used by two subjects"),
    ("dreambooth", "bnh SET", r"expected ID=DATA SET,class=WORD"),
    ("pivotal", "bnh=SET,class=monster", r"more subjects='bnh': is not written as a new token"),
    ("dreambooth", "bnh=SET,class=monster,prior_weight=-1", r"more subjects='bnh=.*prior_weight=-1'"),
    ("dreambooth", "bnh=SET,class=monster,captions=big cat", r"captions= takes one word"),
    ("dreambooth", "bnh=SET,class=../x", r"needs class=WORD, a plain word"),
])
def test_bad_more_subjects_are_refused_before_a_job_exists(ws, upload, fake_python, kind, line, match):
    from conceptlab.studio.jobs import DreamBoothSettings, PivotalSettings

    cls = DreamBoothSettings if kind == "dreambooth" else PivotalSettings
    settings = cls(**{**vars(cls.defaults()), "identifier": "<tuki>" if kind == "pivotal" else "tuki",
                      "class_word": "broccoli", "images": upload, "more_subjects": line.replace("SET", upload)})
    runner = JobRunner(ws, python=fake_python)
    with pytest.raises(InputError, match=match):
        runner.submit(settings)
    assert runner.jobs() == []
