"""The sticker-world judge: a small multi-head CNN that reads every attribute of a 64x64 image.

Trained on unlimited rendered stickers with blur, noise and mild colour jitter, so that it also reads the
softer pictures a diffusion model draws. Heads and label strings are the world's metadata columns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from conceptlab.world.attributes import ATTRIBUTES, MONSTER_PATTERNS, MONSTER_SHAPES, MONSTER_TOPS

# The features judge's heads: the marks that make a monster look like itself (world.attributes.Monster), so that a
# subject missed by the `individual` head can be told apart by which mark was lost. "none" eyes: a faceless monster.
FEATURE_HEADS: dict[str, tuple[str, ...]] = {"shape": MONSTER_SHAPES, "eyes": ("none", "1", "2", "3"),
                                             "top": MONSTER_TOPS, "pattern": MONSTER_PATTERNS}

JUDGE_SIZE = 64
JUDGE_CHECKPOINT_EVERY = 250  # training steps between checkpoints (a run is 1,500)


def shipped_judge() -> Path:
    return Path(__file__).resolve().parent / "judge_weights"


def shipped_features_judge() -> Path:
    return Path(__file__).resolve().parent / "features_judge_weights"


def monster_features(spec) -> dict[str, str]:
    """The FEATURE_HEADS labels of a monster's StickerSpec (its eyes are "none" when it is drawn without a face)."""
    m = spec.monster
    return {"shape": m.shape, "eyes": "none" if spec.emotion == "none" else str(m.eyes), "top": m.top,
            "pattern": m.pattern}


def features_config(**kw) -> JudgeConfig:
    """The features judge's config: FEATURE_HEADS, trained on monsters only."""
    return JudgeConfig(heads={k: list(v) for k, v in FEATURE_HEADS.items()}, objects=("monster",), **kw)


@dataclass
class JudgeConfig:
    """Architecture and training settings of the judge; saved in its safetensors metadata."""

    widths: tuple[int, ...] = (24, 48, 96, 160)
    convs: tuple[int, ...] = (1, 2, 2, 2)  # convolutions per stage (one at full resolution keeps it cheap)
    heads: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in ATTRIBUTES.items()})
    images: int = 24000
    steps: int = 1500
    batch: int = 64
    lr: float = 2e-3
    seed: int = 1
    individual_rate: float = 0.35  # monsters drawn as named individuals, so that head sees them often
    objects: tuple[str, ...] = ()  # render only these objects (the features judge: monsters); () every object


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class JudgeNet(nn.Module):
    """Conv trunk (64 -> 4 px) with one linear head per attribute."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        layers, cin = [], 3
        for w, n in zip(cfg.widths, cfg.convs):
            layers += [_block(cin, w, n), nn.MaxPool2d(2)]
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({k: nn.Linear(cin * 2, len(v)) for k, v in cfg.heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)  # (B, C, 4, 4)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)  # (B, 2C)
        return {k: head(h) for k, head in self.heads.items()}


def to_batch(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> (B, 3, 64, 64) in [-1, 1], resized as needed."""
    arrays = [np.asarray(im.convert("RGB").resize((JUDGE_SIZE, JUDGE_SIZE), Image.Resampling.BICUBIC)
                         if im.size != (JUDGE_SIZE, JUDGE_SIZE) else im.convert("RGB")) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


class Judge:
    """Predicts sticker-world labels: `predict(images) -> {head: [label, ...]}`."""

    def __init__(self, net: JudgeNet, cfg: JudgeConfig):
        self.net, self.cfg = net.eval(), cfg

    @torch.no_grad()
    def probabilities(self, images: list[Image.Image], batch: int = 256) -> dict[str, torch.Tensor]:
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.cfg.heads}
        for i in range(0, len(images), batch):
            logits = self.net(to_batch(images[i:i + batch]))
            for k, v in logits.items():
                out[k].append(v.softmax(-1))
        return {k: torch.cat(v) for k, v in out.items()}

    def predict(self, images: list[Image.Image]) -> dict[str, list[str]]:
        if not images:
            return {k: [] for k in self.cfg.heads}
        probs = self.probabilities(images)
        return {k: [self.cfg.heads[k][i] for i in p.argmax(-1).tolist()] for k, p in probs.items()}

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"config": json.dumps(asdict(self.cfg)), **{k: str(v) for k, v in (extra or {}).items()}}
        tmp = folder / ".judge.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp), metadata=meta)
        tmp.replace(folder / "judge.safetensors")
        return folder / "judge.safetensors"


def load_features_judge(path: str | Path | None = None) -> Judge:
    """The shipped features judge (FEATURE_HEADS: which of a monster's marks an image shows), or one at `path`."""
    return load_judge(path or shipped_features_judge())


def load_judge(path: str | Path | None = None) -> Judge:
    """The shipped judge, or one saved at `path` (a folder or a .safetensors file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from conceptlab.config import dataclass_from_dict

    path = Path(path) if path else shipped_judge()
    file = path / "judge.safetensors" if path.is_dir() else path
    if not file.is_file():
        from conceptlab.errors import InputError

        raise InputError("judge", str(path), "no judge.safetensors there",
                         "Train one with `python scripts/train_judge.py JUDGE_DIR` and pass that folder")
    with safe_open(str(file), framework="pt") as f:
        cfg = dataclass_from_dict(JudgeConfig, json.loads(f.metadata()["config"]))
    net = JudgeNet(cfg)
    net.load_state_dict(load_file(str(file)))
    return Judge(net, cfg)


# ---------------------------------------------------------------- training
def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise, mild colour jitter and small shifts: the softness of generated images."""
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    # random Gaussian blur, sigma in [0, 1.3], for 70% of images
    sigma = u(b) * 1.3 * (u(b) < 0.7)
    k = torch.arange(-3, 4).float()
    kern = torch.exp(-(k[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # (B, 7)
    xp = F.pad(x, (3, 3, 3, 3), mode="replicate")
    xb = xp.reshape(1, b * 3, *xp.shape[2:])
    kh = kern.repeat_interleave(3, 0)[:, None, None, :]  # (3B, 1, 1, 7)
    kv = kern.repeat_interleave(3, 0)[:, None, :, None]
    xb = F.conv2d(F.conv2d(xb, kh, groups=b * 3), kv, groups=b * 3)
    x = xb.reshape_as(x)
    # brightness / contrast / a little per-channel gain (hue stays: colour is a label)
    x = (x - x.mean((1, 2, 3), keepdim=True)) * (0.8 + 0.4 * u(b, 1, 1, 1)) + x.mean((1, 2, 3), keepdim=True)
    x = x + 0.16 * (u(b, 1, 1, 1) - 0.5) + 0.08 * (u(b, 3, 1, 1) - 0.5)
    x = x + torch.randn(x.shape, generator=gen) * (0.06 * u(b, 1, 1, 1))
    shifts = (torch.randint(-3, 4, (2,), generator=gen)).tolist()
    x = torch.roll(x, shifts=shifts, dims=(2, 3))
    return x.clamp(-1, 1)


def render_dataset(cfg: JudgeConfig, offset: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Renders cfg.images stickers (all attributes, held-out ones included; only cfg.objects if set) and their label
    indices: the world's labels, and for monsters monster_features."""
    from conceptlab.world import render, sample_spec

    only = {"object": set(cfg.objects)} if cfg.objects else None
    images, labels = [], {k: [] for k in cfg.heads}
    for i in tqdm(range(cfg.images), desc="judge data"):
        r = render(sample_spec(cfg.seed * 1_000_003 + offset + i, only, individual_rate=cfg.individual_rate),
                   JUDGE_SIZE)
        images.append(np.asarray(r.image))
        known = {**r.labels, **(monster_features(r.spec) if r.spec.object == "monster" else {})}
        for k in cfg.heads:
            labels[k].append(cfg.heads[k].index(known[k]))
    return np.stack(images), {k: np.array(v) for k, v in labels.items()}


class _JudgeTraining:
    """The judge as a TrainingMethod of the shared loop: every head's label-smoothed cross-entropy on augmented
    rendered stickers, batches drawn uniformly."""

    def __init__(self, cfg: JudgeConfig, images: np.ndarray, labels: dict[str, np.ndarray]):
        torch.manual_seed(cfg.seed)
        self.cfg, self.net = cfg, JudgeNet(cfg).train()
        self.x_all = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, 3, 64, 64) uint8
        self.y_all = {k: torch.from_numpy(v) for k, v in labels.items()}
        self.gen, self.rng = torch.Generator().manual_seed(cfg.seed), np.random.default_rng(cfg.seed)
        self.streams = {"augment": self.gen, "batches": self.rng}

    def parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def loss(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.from_numpy(self.rng.integers(0, len(self.x_all), batch_size))
        out = self.net(augment(self.x_all[idx].float() / 127.5 - 1, self.gen))
        return sum(F.cross_entropy(out[k], self.y_all[k][idx], label_smoothing=0.05) for k in self.cfg.heads)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()  # BatchNorm's running statistics included

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def save_outputs(self, out: Path, step: int, loss: float | None) -> None:
        pass  # the caller saves the judge, with what it measured in the metadata

    def preview(self, prompts, seed, steps) -> list:
        return []


def train_judge(cfg: JudgeConfig, images: np.ndarray, labels: dict[str, np.ndarray], out: str | Path,
                resume: bool = False, stop_at: int | None = None) -> Judge:
    """Trains a judge on the shared loop in `out` (checkpoints, loss curve): AdamW, 100 warm-up steps, cosine to 0.

    Continues the run in `out` if `resume`, else starts over. After SIGINT/SIGTERM (saved) raises TrainingStopped;
    `stop_at` pauses after that step the same way.
    """
    from conceptlab.training.loop import TrainConfig, Trainer, TrainingStopped

    method = _JudgeTraining(cfg, images, labels)
    train = TrainConfig(steps=cfg.steps, batch_size=cfg.batch, lr=cfg.lr, lr_schedule="cosine", warmup_steps=100,
                        weight_decay=5e-4, max_grad_norm=0.0, fused_adamw=False, seed=cfg.seed,
                        checkpoint_every=JUDGE_CHECKPOINT_EVERY)
    trainer = Trainer(method, train, out, config_record={"judge": asdict(cfg), "images": len(images)}, desc="judge",
                      streams=method.streams)
    result = trainer.train(resume=resume, overwrite=not resume, stop_at=stop_at)
    if result.stopped != "done":
        raise TrainingStopped(result)
    return Judge(method.net.eval(), cfg)


def judge_accuracy(judge: Judge, images: np.ndarray, labels: dict[str, np.ndarray],
                   soften: bool = False) -> dict[str, float]:
    """Per-head accuracy on rendered images (optionally with the training augmentation applied)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    if soften:
        x = augment(x, torch.Generator().manual_seed(123))
    preds: dict[str, list] = {k: [] for k in judge.cfg.heads}
    with torch.no_grad():
        for i in range(0, len(x), 256):
            for k, v in judge.net(x[i:i + 256]).items():
                preds[k].append(v.argmax(-1))
    return {k: float((torch.cat(preds[k]).numpy() == labels[k]).mean()) for k in judge.cfg.heads}
