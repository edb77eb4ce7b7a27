"""An out-of-world test set: pictures drawn unlike the sticker world, each with the region an edit may change.

The sticker world (conceptlab.world) draws with PIL's shape primitives, flat fills and a white border. These
pictures are rasterised here from implicit shapes instead (superellipses, polygons, thick parabolas) at 4x and
box-filtered down, with other proportions, radial or linear shading, outlines of other widths, and plain,
gradient, paper-noise, striped or dotted backgrounds: faces of many proportions (emotion swaps) and apples,
stars, fish, cats and clouds (object swaps). Labels use the judge's vocabulary (world.attributes.ATTRIBUTES).

`offworld_set(cfg)` is deterministic from cfg.seed; a quarter of the pictures (stratified by kind) is for
choosing settings ("choose"), the rest for reporting ("report").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from conceptlab.errors import InputError

FACE_EMOTIONS = ("happy", "sad", "angry")  # one-for-one word swaps of each other ("in love" changes word order)
OBJECT_KINDS = ("apple", "star", "fish", "cat", "cloud")
# judge colour words -> a base RGB; drawn with +-18 per channel of jitter and shading on top
PALETTE = {"red": (214, 48, 40), "orange": (240, 140, 30), "yellow": (246, 212, 40), "green": (70, 170, 60),
           "blue": (50, 110, 220), "purple": (140, 70, 190), "pink": (240, 120, 180), "brown": (140, 90, 50)}
FACE_COLOURS = ("yellow", "orange", "pink", "green", "blue", "purple")
BACKGROUNDS = ("white", "gradient", "paper", "stripes", "dots")
INK = np.array((35, 30, 40), dtype=np.float64)


@dataclass
class OffworldConfig:
    """How the out-of-world set is drawn (defaults: the set the edit proof reports on)."""

    n: int = 40  # pictures; half faces, half objects (the issue asks for at least 40)
    seed: int = 0  # picture i is drawn from (seed, i)
    size: int = 64  # the shipped base model's native size (16x16 latents, VAE factor 4)
    supersample: int = 4  # drawn at size * supersample, box-filtered down (anti-aliasing)
    choose_share: float = 0.25  # share of each kind set aside for choosing settings


@dataclass
class Picture:
    """One drawn picture, what it shows, and the edit a user would try on it."""

    index: int
    kind: str  # "face" (emotion swap) or "object" (object swap)
    image: Image.Image  # (size, size) RGB
    mask: np.ndarray  # (size, size) bool: the region the edit may change (features' box + 3 px; object's box + 6 px)
    labels: dict[str, str]  # judge heads -> label: object, emotion, colour
    prompt: str  # what it shows, in the world's caption grammar: 'a sticker of a happy yellow emoji'
    target: str  # the edit's target prompt: one word swapped
    head: str  # the judge head the edit changes: "emotion" or "object"
    old: str
    new: str
    split: str  # "choose" or "report"
    style: dict = field(default_factory=dict)  # drawing parameters (background, shading, proportions)


def check_offworld(cfg: OffworldConfig) -> None:
    """Raises InputError for a bad set configuration."""
    if not isinstance(cfg.n, int) or cfg.n < 2:
        raise InputError("--n", cfg.n, "the set needs at least one face and one object", "Use --n 2 or more (40 is the default)")
    if not isinstance(cfg.size, int) or not 32 <= cfg.size <= 1024:
        raise InputError("--size", cfg.size, "is outside 32-1024 pixels", "Use the model's size (64 for the shipped one)")
    if not isinstance(cfg.supersample, int) or not 1 <= cfg.supersample <= 8:
        raise InputError("supersample", cfg.supersample, "is outside 1-8", "Use 4")
    if not 0 < cfg.choose_share < 1:
        raise InputError("choose_share", cfg.choose_share, "must be within (0, 1)", "Use 0.25")


# ----------------------------------------------------------------------------------------------- canvas


class Canvas:
    """A float RGB canvas at supersampled resolution; coordinates are in output pixels (0..size)."""

    def __init__(self, size: int, ss: int, background: np.ndarray):
        self.size, self.ss = size, ss
        n = size * ss
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
        self.y, self.x = (yy + 0.5) / ss, (xx + 0.5) / ss  # (n, n) sample centres in output pixels
        self.rgb = background.astype(np.float64)  # (n, n, 3) in 0..255
        self.parts: dict[str, np.ndarray] = {}  # name -> (n, n) bool coverage, for the edit regions

    def paint(self, cover: np.ndarray, colour, part: str | None = None) -> None:
        """Paints `colour` ((3,) or (n, n, 3)) where `cover` (n, n) bool is true; records it under `part`."""
        colour = np.broadcast_to(np.asarray(colour, dtype=np.float64), self.rgb.shape)
        self.rgb[cover] = colour[cover]
        if part is not None:
            self.parts[part] = self.parts.get(part, np.zeros_like(cover)) | cover

    def polygon(self, points) -> np.ndarray:
        """(n, n) bool coverage of a polygon given in output pixels."""
        im = Image.new("L", (self.size * self.ss,) * 2, 0)
        ImageDraw.Draw(im).polygon([(px * self.ss, py * self.ss) for px, py in points], fill=255)
        return np.asarray(im) > 127

    def image(self) -> Image.Image:
        n, s = self.size, self.ss
        small = self.rgb.reshape(n, s, n, s, 3).mean((1, 3))  # box filter: (size, size, 3)
        return Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8))

    def part_box(self, names, margin: int, grow_up: float = 0.0) -> np.ndarray:
        """(size, size) bool: the bounding box of the named parts in output pixels, grown by `margin`
        (and upward by `grow_up` pixels more: where brows go)."""
        cover = np.zeros_like(self.x, dtype=bool)
        for name in names:
            cover |= self.parts.get(name, False)
        mask = np.zeros((self.size, self.size), dtype=bool)
        if not cover.any():
            return mask
        ys, xs = np.nonzero(cover)
        y0, y1 = ys.min() // self.ss, ys.max() // self.ss + 1
        x0, x1 = xs.min() // self.ss, xs.max() // self.ss + 1
        mask[max(0, int(y0 - margin - grow_up)):min(self.size, y1 + margin),
             max(0, x0 - margin):min(self.size, x1 + margin)] = True
        return mask


def superellipse(c: Canvas, cx, cy, rx, ry, power: float = 2.0, angle: float = 0.0) -> np.ndarray:
    """(n, n) bool: |u/rx|^p + |v/ry|^p <= 1 in a frame rotated by `angle` radians."""
    dx, dy = c.x - cx, c.y - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return np.abs(u / rx) ** power + np.abs(v / ry) ** power <= 1


def parabola(c: Canvas, cx, cy, half_width, bend, thickness) -> np.ndarray:
    """(n, n) bool: a thick curve y = cy + bend * (1 - ((x - cx) / half_width)^2) for |x - cx| <= half_width
    (bend > 0: a smile's lowest point is bend below its ends; bend < 0: a frown)."""
    t = (c.x - cx) / half_width
    curve = cy + bend * (1 - t ** 2)
    return (np.abs(t) <= 1) & (np.abs(c.y - curve) <= thickness / 2)


def shaded(c: Canvas, rgb, kind: str, cx, cy, r, rng: np.random.Generator) -> np.ndarray:
    """(n, n, 3) colour field: flat, radial (light from the upper left) or linear (top light, bottom dark)."""
    base = np.asarray(rgb, dtype=np.float64)
    if kind == "flat":
        f = np.zeros_like(c.x)
    elif kind == "radial":
        lx, ly = cx - 0.35 * r, cy - 0.4 * r
        f = 0.35 - 0.6 * np.clip(np.hypot(c.x - lx, c.y - ly) / (1.6 * r), 0, 1)
    else:
        a = rng.uniform(-0.6, 0.6)  # the light's direction, near vertical
        f = -0.4 * ((c.x - cx) * np.sin(a) + (c.y - cy) * np.cos(a)) / r
    out = np.where(f[..., None] >= 0, base + (255 - base) * f[..., None], base * (1 + f[..., None]))
    return np.clip(out, 0, 255)


def background(kind: str, size: int, ss: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n, 3) background: white, a two-colour gradient, paper noise, pale stripes or pale dots."""
    n = size * ss
    white = np.full((n, n, 3), 250.0)
    pale = lambda: rng.uniform(200, 245, 3)  # noqa: E731
    yy, xx = np.mgrid[0:n, 0:n] / n
    if kind == "white":
        return white
    if kind == "gradient":
        a, b, t = pale(), pale(), (yy * np.cos(rng.uniform(0, 1.5)) + xx * np.sin(rng.uniform(0, 1.5)))
        t = (t - t.min()) / max(t.max() - t.min(), 1e-8)
        return a + (b - a) * t[..., None]
    if kind == "paper":
        coarse = rng.normal(0, 10, (size // 4, size // 4, 1))
        noise = np.kron(coarse, np.ones((4 * ss, 4 * ss, 1))) + rng.normal(0, 4, (n, n, 1))
        return np.clip(pale()[None, None] + noise, 0, 255)
    if kind == "stripes":
        period, angle = rng.uniform(6, 12), rng.uniform(0, np.pi)
        s = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) * size / period) > 0
        return np.where(s[..., None], pale()[None, None], white)
    period = rng.uniform(7, 11)  # dots
    u, v = (xx * size) % period - period / 2, (yy * size) % period - period / 2
    return np.where((np.hypot(u, v) < period * 0.22)[..., None], pale()[None, None], white)


def jitter(name: str, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.asarray(PALETTE[name], dtype=np.float64) + rng.uniform(-18, 18, 3), 0, 255)


# ----------------------------------------------------------------------------------------------- faces


def draw_face(c: Canvas, emotion: str, colour: str, rng: np.random.Generator, features: bool = True) -> dict:
    """A face of random proportions, shading and outline with eyes, brows and a mouth showing `emotion`;
    `features=False` leaves the face blank (the test's check that the mask covers what the features changed)."""
    s = c.size
    cx, cy = s / 2 + rng.uniform(-4, 4), s / 2 + rng.uniform(-3, 4)
    rx = s * rng.uniform(0.27, 0.38)
    ry = min(rx * rng.uniform(0.78, 1.3), s * 0.42)
    power, angle = rng.uniform(2.0, 3.4), rng.uniform(-0.15, 0.15)
    base, shading = jitter(colour, rng), str(rng.choice(("flat", "radial", "linear")))
    outline = float(rng.choice((0.0, rng.uniform(0.8, 2.5))))
    if outline:
        c.paint(superellipse(c, cx, cy, rx + outline, ry + outline, power, angle), base * 0.45)
    c.paint(superellipse(c, cx, cy, rx, ry, power, angle), shaded(c, base, shading, cx, cy, max(rx, ry), rng))
    eye_style = str(rng.choice(("dot", "oval", "ring")))
    ex, ey, er = rx * rng.uniform(0.3, 0.44), cy - ry * rng.uniform(0.12, 0.3), rx * rng.uniform(0.09, 0.13)
    mouth_y, mw = cy + ry * rng.uniform(0.32, 0.48), rx * rng.uniform(0.35, 0.55)
    style = {"shape": f"superellipse p={power:.1f}", "aspect": round(ry / rx, 2), "shading": shading,
             "outline_px": round(outline, 1), "eyes": eye_style}
    if not features:
        return style
    for side in (-1, 1):
        x = cx + side * ex
        if eye_style == "ring":
            c.paint(superellipse(c, x, ey, er * 1.3, er * 1.5), (250, 250, 250), "eyes")
            c.paint(superellipse(c, x, ey + er * 0.2, er * 0.7, er * 0.8), INK, "eyes")
        else:
            c.paint(superellipse(c, x, ey, er, er * (1.7 if eye_style == "oval" else 1.0)), INK, "eyes")
        if emotion in ("angry", "sad") and (emotion == "angry" or rng.random() < 0.6):
            inner = -side if emotion == "angry" else side  # angry: inner ends down; sad: inner ends up
            y0 = ey - er * 2.4
            p = [(x - er * 1.8, y0 - inner * er * 0.8), (x + er * 1.8, y0 + inner * er * 0.8)]
            w = max(1.2, er * 0.7)
            c.paint(c.polygon([p[0], p[1], (p[1][0], p[1][1] + w), (p[0][0], p[0][1] + w)]), INK, "brows")
    thick = max(1.5, rx * rng.uniform(0.08, 0.13))
    if emotion == "happy" and rng.random() < 0.5:  # an open smile: the lower half of an ellipse, dark red
        open_mouth = superellipse(c, cx, mouth_y - mw * 0.3, mw, mw * 0.75) & (c.y >= mouth_y - mw * 0.3)
        c.paint(open_mouth, (150, 30, 40), "mouth")
    elif emotion == "happy":
        c.paint(parabola(c, cx, mouth_y - mw * 0.25, mw, mw * 0.5, thick), INK, "mouth")
    elif emotion == "sad":
        c.paint(parabola(c, cx, mouth_y + mw * 0.3, mw * 0.9, -mw * 0.45, thick), INK, "mouth")
    else:  # angry: a flat, wide, thick mouth
        c.paint(superellipse(c, cx, mouth_y + mw * 0.1, mw * 0.85, thick * 0.8, power=6), INK, "mouth")
    return style


# ----------------------------------------------------------------------------------------------- objects


def draw_object(c: Canvas, kind: str, colour: str, rng: np.random.Generator) -> dict:
    """An apple, star, fish, cat (head) or cloud of random proportions and shading, painted as part "object"."""
    s = c.size
    cx, cy, r = s / 2 + rng.uniform(-5, 5), s / 2 + rng.uniform(-4, 5), s * rng.uniform(0.2, 0.28)
    base, shading = jitter(colour, rng), str(rng.choice(("flat", "radial", "linear")))
    fill = shaded(c, base, shading, cx, cy, r, rng)
    outline = float(rng.choice((0.0, rng.uniform(0.8, 2.0))))
    style = {"shading": shading, "outline_px": round(outline, 1)}
    if kind == "apple":
        body = superellipse(c, cx - r * 0.28, cy, r * 0.72, r * 0.85) | superellipse(c, cx + r * 0.28, cy, r * 0.72, r * 0.85)
        body &= ~superellipse(c, cx, cy - r * 0.92, r * 0.18, r * 0.18)  # the notch at the top
        stem = c.polygon([(cx - 0.8, cy - r * 0.7), (cx + 0.8, cy - r * 0.7), (cx + 2.5, cy - r * 1.2), (cx + 1.0, cy - r * 1.2)])
        leaf = superellipse(c, cx + r * 0.35, cy - r * 1.05, r * 0.3, r * 0.12, angle=-0.5)
        shapes = [(body, fill), (stem, np.array((100, 60, 30.0))), (leaf, np.array((60, 150, 50.0)))]
    elif kind == "star":
        inner, turn = rng.uniform(0.38, 0.56), rng.uniform(-0.3, 0.3)
        pts = [(cx + (r * 1.15 if k % 2 == 0 else r * 1.15 * inner) * np.sin(turn + k * np.pi / 5),
                cy - (r * 1.15 if k % 2 == 0 else r * 1.15 * inner) * np.cos(turn + k * np.pi / 5)) for k in range(10)]
        shapes, style["inner_ratio"] = [(c.polygon(pts), fill)], round(inner, 2)
    elif kind == "fish":
        d = float(rng.choice((-1, 1)))  # facing left or right
        ry = r * rng.uniform(0.45, 0.65)
        body = superellipse(c, cx - d * r * 0.15, cy, r * 0.85, ry)
        tail = c.polygon([(cx + d * r * 0.55, cy), (cx + d * r * 1.2, cy - ry * 0.9), (cx + d * r * 1.2, cy + ry * 0.9)])
        eye = superellipse(c, cx - d * r * 0.6, cy - ry * 0.25, r * 0.1, r * 0.1)
        shapes, style["facing"] = [(body | tail, fill), (eye, INK)], "left" if d < 0 else "right"
    elif kind == "cat":
        head = superellipse(c, cx, cy + r * 0.1, r * 0.9, r * 0.75)
        ears = c.polygon([(cx - r * 0.85, cy - r * 0.2), (cx - r * 0.7, cy - r * 1.0), (cx - r * 0.2, cy - r * 0.55)]) | \
            c.polygon([(cx + r * 0.85, cy - r * 0.2), (cx + r * 0.7, cy - r * 1.0), (cx + r * 0.2, cy - r * 0.55)])
        eyes = superellipse(c, cx - r * 0.35, cy, r * 0.09, r * 0.16) | superellipse(c, cx + r * 0.35, cy, r * 0.09, r * 0.16)
        nose = c.polygon([(cx - r * 0.1, cy + r * 0.25), (cx + r * 0.1, cy + r * 0.25), (cx, cy + r * 0.37)])
        whiskers = np.zeros_like(head)
        for side in (-1, 1):
            for k in (-1, 0, 1):
                whiskers |= parabola(c, cx + side * r * 0.6, cy + r * (0.35 + 0.1 * k), r * 0.3, k * r * 0.05, 0.6) & head
        shapes = [(head | ears, fill), (eyes, INK), (nose, np.array((230, 120, 140.0))), (whiskers, INK)]
    else:  # cloud: a flat-bottomed union of puffs
        puffs = int(rng.integers(3, 6))
        cover = superellipse(c, cx, cy + r * 0.3, r * 1.2, r * 0.35, power=4)
        for k in range(puffs):
            px = cx + r * (-0.9 + 1.8 * k / (puffs - 1))
            pr = r * (0.55 if k in (0, puffs - 1) else rng.uniform(0.6, 0.8))
            cover |= superellipse(c, px, cy + r * 0.3 - pr * 0.6, pr, pr) & (c.y <= cy + r * 0.62)
        shapes, style["puffs"] = [(cover, fill)], puffs
    if outline:
        whole = np.zeros_like(c.x, dtype=bool)
        for cover, _ in shapes:
            whole |= cover
        grown = whole.copy()
        step = max(1, int(round(outline * c.ss)))
        for dy, dx in ((step, 0), (-step, 0), (0, step), (0, -step)):
            grown |= np.roll(whole, (dy, dx), axis=(0, 1))
        c.paint(grown, base * 0.45, "object")
    for cover, colour_field in shapes:
        c.paint(cover, colour_field, "object")
    return style


# ----------------------------------------------------------------------------------------------- the set

OBJECT_COLOURS = {"apple": ("red", "green", "yellow"), "star": ("yellow", "orange", "red", "blue", "purple", "pink"),
                  "fish": ("orange", "blue", "red", "yellow", "purple"), "cat": ("orange", "brown", "yellow", "pink"),
                  "cloud": ("blue", "pink", "purple", "yellow")}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def plan(cfg: OffworldConfig, i: int) -> dict:
    """Picture i's content, split and drawing seed: even i faces, odd i objects; every 1/choose_share-th of
    each kind is for choosing settings."""
    rng = np.random.default_rng([cfg.seed, i, 0])
    j, kind = i // 2, ("face", "object")[i % 2]
    split = "choose" if j % max(2, round(1 / cfg.choose_share)) == 0 else "report"
    if kind == "face":
        old = FACE_EMOTIONS[j % 3]
        new = FACE_EMOTIONS[(j % 3 + 1 + int(rng.integers(2))) % 3]
        colour = str(rng.choice(FACE_COLOURS))
        labels = {"object": "emoji", "emotion": old, "colour": colour}
        prompt = lambda e: f"a sticker of {_article(e)} {e} {colour} emoji"  # noqa: E731
        head = "emotion"
    else:
        old = OBJECT_KINDS[j % len(OBJECT_KINDS)]
        new = str(rng.choice([k for k in OBJECT_KINDS if k != old]))
        colour = str(rng.choice(OBJECT_COLOURS[old]))
        labels = {"object": old, "emotion": "none", "colour": colour}
        prompt = lambda o: f"a sticker of {_article(colour)} {colour} {o}"  # noqa: E731
        head = "object"
    return {"kind": kind, "split": split, "labels": labels, "prompt": prompt(old), "target": prompt(new),
            "head": head, "old": old, "new": new, "background": str(rng.choice(BACKGROUNDS)),
            "draw_seed": int(rng.integers(2**31))}


def draw_picture(cfg: OffworldConfig, i: int, parts: bool = True) -> Picture:
    """Picture i of the set; `parts=False` draws it without what the edit changes (a face's features, the object)."""
    p = plan(cfg, i)
    rng = np.random.default_rng(p["draw_seed"])
    canvas = Canvas(cfg.size, cfg.supersample, background(p["background"], cfg.size, cfg.supersample, rng))
    if p["kind"] == "face":
        style = draw_face(canvas, p["old"], p["labels"]["colour"], rng, features=parts)
        # the features' box, 3 px more around and room above the eyes for brows an edit may add
        mask = canvas.part_box(("eyes", "brows", "mouth"), margin=3, grow_up=cfg.size * 0.05)
    else:
        style = draw_object(canvas, p["old"], p["labels"]["colour"], rng) if parts else {}
        mask = canvas.part_box(("object",), margin=6)  # as the edit proof's rendered swaps: the box + 6 px
    style["background"] = p["background"]
    return Picture(i, p["kind"], canvas.image(), mask, p["labels"], p["prompt"], p["target"], p["head"], p["old"],
                   p["new"], p["split"], style)


def offworld_set(cfg: OffworldConfig | None = None, split: str | None = None) -> list[Picture]:
    """The set's pictures (all, or those of `split`: "choose" or "report"), deterministic from cfg.seed."""
    cfg = cfg or OffworldConfig()
    check_offworld(cfg)
    if split not in (None, "choose", "report"):
        raise InputError("split", split, "unknown split", "Use 'choose', 'report' or None for all")
    return [draw_picture(cfg, i) for i in range(cfg.n) if split is None or plan(cfg, i)["split"] == split]


def export_offworld(out: str | Path, cfg: OffworldConfig | None = None) -> Path:
    """Writes the set to `out` as an image folder: NAME.png, masks/NAME.png (white: the region an edit may
    change) and metadata.jsonl (file_name, text, labels, the edit's target, split); returns metadata.jsonl."""
    from conceptlab.io import atomic_write_text

    cfg = cfg or OffworldConfig()
    pictures = offworld_set(cfg)
    out = Path(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in pictures:
        name = f"offworld-{p.index:03d}.png"
        p.image.save(out / name)
        Image.fromarray(p.mask.astype(np.uint8) * 255).save(out / "masks" / name)
        rows.append({"file_name": name, "text": p.prompt, **p.labels, "kind": p.kind, "target": p.target,
                     "edit": {"head": p.head, "old": p.old, "new": p.new}, "split": p.split, "style": p.style})
    path = out / "metadata.jsonl"
    atomic_write_text("".join(json.dumps(r) + "\n" for r in rows), path)
    atomic_write_text(json.dumps(asdict(cfg), indent=1), out / "offworld.json")
    return path
