"""Draws a StickerSpec into a PIL image: background, object with face and extras, then the style filter.

Drawing happens on a 256 px canvas and is downsampled, so every attribute still reads at 64x64.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from conceptlab.world.attributes import Monster, StickerSpec

CANVAS = 256
INK = (30, 24, 28)

RGB = {
    "red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (250, 215, 40), "green": (60, 170, 60),
    "blue": (45, 100, 225), "purple": (140, 60, 200), "pink": (245, 120, 185), "brown": (130, 80, 40),
}


@dataclass
class Rendered:
    """A rendered sticker: the picture, its labels, a caption, the object's box in pixels and its silhouette."""

    image: Image.Image
    labels: dict[str, str]
    caption: str
    bbox: tuple[int, int, int, int]
    spec: StickerSpec
    mask: Image.Image  # "L", white where the object (and what it wears or holds) is


def _shade(rgb, f):
    """Mixes towards white (f > 0) or black (f < 0)."""
    t = 255 if f > 0 else 0
    return tuple(int(c + (t - c) * abs(f)) for c in rgb)


# ---------------------------------------------------------------- backgrounds
def _background(name: str, rng: random.Random) -> Image.Image:
    im = Image.new("RGB", (CANVAS, CANVAS), (250, 250, 246))
    d = ImageDraw.Draw(im)
    S = CANVAS
    if name == "beach":
        d.rectangle([0, 0, S, S * 0.45], fill=(150, 205, 245))
        d.rectangle([0, S * 0.45, S, S * 0.62], fill=(30, 110, 190))
        d.rectangle([0, S * 0.62, S, S], fill=(238, 214, 150))
        d.ellipse([S * 0.78, S * 0.06, S * 0.93, S * 0.21], fill=(255, 225, 80))
        for i in range(3):
            y = S * (0.5 + 0.04 * i)
            d.line([(S * rng.uniform(0, .3), y), (S * rng.uniform(.5, 1), y)], fill=(200, 230, 250), width=3)
    elif name == "snowy mountain":
        d.rectangle([0, 0, S, S], fill=(185, 215, 240))
        for x0, h in ((-0.2, 0.55), (0.3, 0.7), (0.65, 0.5)):
            x0 = x0 + rng.uniform(-0.05, 0.05)
            top = (S * (x0 + 0.3), S * (0.75 - h))
            d.polygon([(S * x0, S * 0.8), top, (S * (x0 + 0.6), S * 0.8)], fill=(110, 115, 135))
            cap = [(top[0] - S * 0.09, top[1] + S * 0.12), top, (top[0] + S * 0.09, top[1] + S * 0.12)]
            d.polygon(cap, fill=(255, 255, 255))
        d.rectangle([0, S * 0.78, S, S], fill=(245, 248, 255))
    elif name == "jungle":
        d.rectangle([0, 0, S, S], fill=(20, 90, 40))
        for _ in range(40):
            x, y, r = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(12, 30)
            g = rng.choice([(40, 140, 50), (30, 115, 45), (80, 170, 60), (15, 70, 30)])
            d.ellipse([x - r, y - r / 2.2, x + r, y + r / 2.2], fill=g)
        for _ in range(4):
            x = rng.uniform(0, S)
            d.line([(x, 0), (x + rng.uniform(-20, 20), S * rng.uniform(0.3, 0.6))], fill=(90, 60, 30), width=4)
    elif name == "desert":
        d.rectangle([0, 0, S, S], fill=(250, 235, 190))
        for k, col in ((0.55, (235, 185, 100)), (0.7, (220, 160, 80))):
            ph = rng.uniform(0, 6.28)
            pts = [(x, S * k + 12 * math.sin(x / 40 + ph)) for x in range(0, S + 8, 8)]
            d.polygon(pts + [(S, S), (0, S)], fill=col)
        cx = rng.choice([S * 0.12, S * 0.88])
        d.rounded_rectangle([cx - 7, S * 0.45, cx + 7, S * 0.72], 7, fill=(50, 140, 60))
        d.rounded_rectangle([cx - 20, S * 0.52, cx - 9, S * 0.62], 5, fill=(50, 140, 60))
        d.ellipse([S * 0.08, S * 0.06, S * 0.2, S * 0.18], fill=(255, 240, 150))
    elif name == "river":
        d.rectangle([0, 0, S, S * 0.3], fill=(165, 210, 245))
        d.rectangle([0, S * 0.3, S, S], fill=(110, 185, 80))
        ph = rng.uniform(0, 6.28)
        left = [(S * 0.5 + 50 * math.sin(y / 45 + ph) - 10 - (y - S * 0.3) * 0.35, y) for y in range(int(S * 0.3), S + 8, 8)]
        right = [(S * 0.5 + 50 * math.sin(y / 45 + ph) + 10 + (y - S * 0.3) * 0.35, y) for y in range(int(S * 0.3), S + 8, 8)]
        d.polygon(left + right[::-1], fill=(60, 140, 220))
    elif name == "plain":
        tint = rng.choice([(250, 250, 246), (245, 245, 250), (252, 248, 240)])
        d.rectangle([0, 0, S, S], fill=tint)
    return im


# ---------------------------------------------------------------- objects
def _outline(style: str) -> dict:
    return {} if style == "painting" else {"outline": INK, "width": 5}


def _draw_body(d: ImageDraw.ImageDraw, spec: StickerSpec, box, rng: random.Random, ol: dict):
    """Draws the object's body in `box`; returns (face centre x, y, face scale, top y)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    col = RGB[spec.colour]
    obj = spec.object
    if obj == "apple":
        d.ellipse([x0, y0 + h * .12, cx + w * .08, y1], fill=col, **ol)
        d.ellipse([cx - w * .08, y0 + h * .12, x1, y1], fill=col, **ol)
        d.ellipse([x0 + w * .06, y0 + h * .16, x1 - w * .06, y1 - h * .02], fill=col)
        d.line([(cx, y0 + h * .2), (cx + w * .05, y0)], fill=(100, 60, 20), width=7)
        d.ellipse([cx + w * .06, y0 - h * .02, cx + w * .32, y0 + h * .1], fill=(70, 160, 60), **ol)
        return cx, cy + h * .1, w * .75, y0
    if obj == "broccoli":
        stalk = _shade(col, 0.45)
        d.polygon([(cx - w * .14, cy), (cx + w * .14, cy), (cx + w * .2, y1), (cx - w * .2, y1)], fill=stalk, **ol)
        for fx, fy, fr in ((-.27, -.05, .22), (.27, -.05, .22), (-.15, -.28, .22), (.15, -.28, .22), (0, -.1, .28)):
            r = w * fr
            d.ellipse([cx + w * fx - r, cy + h * fy - r, cx + w * fx + r, cy + h * fy + r], fill=col, **ol)
        d.ellipse([cx - w * .36, cy - h * .36, cx + w * .36, cy + h * .12], fill=col)
        return cx, cy + h * .24, w * .5, y0
    if obj == "star":
        pts = []
        for i in range(10):
            r = (w / 2) * (1.0 if i % 2 == 0 else 0.48)
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + h * 0.05 + r * math.sin(a)))
        d.polygon(pts, fill=col, **ol)
        return cx, cy + h * .12, w * .5, y0
    if obj == "emoji":
        d.ellipse(box, fill=col, **ol)
        return cx, cy, w * .95, y0
    if obj == "cat":
        for s in (-1, 1):
            d.polygon([(cx + s * w * .42, y0 + h * .35), (cx + s * w * .36, y0), (cx + s * w * .08, y0 + h * .2)],
                      fill=col, **ol)
        d.ellipse([x0, y0 + h * .12, x1, y1], fill=col, **ol)
        for s in (-1, 1):
            for k in (-1, 1):
                d.line([(cx + s * w * .22, cy + h * .22), (cx + s * w * .52, cy + h * (.18 + .08 * k))],
                       fill=INK, width=3)
        return cx, cy + h * .08, w * .8, y0
    if obj == "fish":
        d.polygon([(x1 - w * .25, cy), (x1, cy - h * .3), (x1, cy + h * .3)], fill=_shade(col, -0.2), **ol)
        d.ellipse([x0, cy - h * .33, x1 - w * .15, cy + h * .33], fill=col, **ol)
        d.polygon([(cx - w * .1, cy - h * .3), (cx + w * .1, cy - h * .5), (cx + w * .15, cy - h * .28)],
                  fill=_shade(col, -0.2), **ol)
        return x0 + w * .33, cy, w * .5, cy - h * .4
    if obj == "cloud":
        for fx, fy, fr in ((-.25, .08, .25), (.25, .08, .25), (0, -.1, .32)):
            r = w * fr
            d.ellipse([cx + w * fx - r, cy + h * fy - r, cx + w * fx + r, cy + h * fy + r], fill=col, **ol)
        d.rounded_rectangle([x0 + w * .02, cy, x1 - w * .02, cy + h * .3], int(h * .15), fill=col, **ol)
        d.rectangle([x0 + w * .1, cy - h * .05, x1 - w * .1, cy + h * .25], fill=col)
        return cx, cy + h * .08, w * .55, y0 + h * .1
    if obj == "monster":
        return _draw_monster(d, spec.monster, box, col, ol)
    raise ValueError(obj)


def _draw_monster(d, m: Monster, box, col, ol):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    body = {"round": [x0 + w * .08, y0 + h * .15, x1 - w * .08, y1],
            "tall": [cx - w * .28, y0 + h * .05, cx + w * .28, y1],
            "wide": [x0 - w * .05, cy - h * .15, x1 + w * .05, y1]}[m.shape]
    bx0, by0, bx1, by1 = body
    bw = bx1 - bx0
    if m.top == "horns":
        for s in (-1, 1):
            hx = (bx0 + bx1) / 2 + s * bw * .25
            d.polygon([(hx - 10, by0 + 12), (hx + s * 10, by0 - h * .17), (hx + 10, by0 + 12)], fill=(245, 240, 225), **ol)
    elif m.top == "antenna":
        for s in (-1, 1):
            hx = (bx0 + bx1) / 2 + s * bw * .15
            d.line([(hx, by0 + 10), (hx + s * 12, by0 - h * .16)], fill=INK, width=5)
            d.ellipse([hx + s * 12 - 9, by0 - h * .16 - 9, hx + s * 12 + 9, by0 - h * .16 + 9], fill=(255, 230, 60), **ol)
    d.rounded_rectangle(body, int(min(bw, by1 - by0) * .45), fill=col, **ol)
    dark = _shade(col, -0.35)
    if m.pattern == "spots":
        for fx, fy in ((.22, .62), (.75, .55), (.5, .82), (.3, .85), (.78, .8)):
            r = bw * .07
            x, y = bx0 + bw * fx, by0 + (by1 - by0) * fy
            d.ellipse([x - r, y - r, x + r, y + r], fill=dark)
    elif m.pattern == "stripes":
        for fy in (.62, .75, .88):
            y = by0 + (by1 - by0) * fy
            d.line([(bx0 + bw * .12, y), (bx1 - bw * .12, y)], fill=dark, width=7)
    fy = by0 + (by1 - by0) * (.38 if m.shape != "wide" else .42)
    return (bx0 + bx1) / 2, fy, min(bw, w) * .75, by0


# ---------------------------------------------------------------- faces and extras
def _heart(d, x, y, r, fill):
    d.ellipse([x - r, y - r * .8, x, y + r * .2], fill=fill)
    d.ellipse([x, y - r * .8, x + r, y + r * .2], fill=fill)
    d.polygon([(x - r * .97, y - r * .15), (x + r * .97, y - r * .15), (x, y + r)], fill=fill)


def _eye_positions(fx, fy, s, n):
    if n == 1:
        return [(fx, fy - s * .1)]
    if n == 3:
        return [(fx - s * .26, fy - s * .08), (fx, fy - s * .2), (fx + s * .26, fy - s * .08)]
    return [(fx - s * .2, fy - s * .1), (fx + s * .2, fy - s * .1)]


def _draw_face(d, spec: StickerSpec, fx, fy, s):
    """Eyes, brows and mouth that show the emotion; s is the face width in pixels."""
    e = spec.emotion
    n = spec.monster.eyes if spec.object == "monster" else 2
    er = s * (.085 if n != 3 else .07)
    eyes = _eye_positions(fx, fy, s, n)
    for ex, ey in eyes:
        if e == "in love":
            _heart(d, ex, ey, er * 1.5, (230, 30, 70))
        elif e == "neutral":
            d.ellipse([ex - er * .7, ey - er * .7, ex + er * .7, ey + er * .7], fill=INK)
        else:
            d.ellipse([ex - er, ey - er * 1.2, ex + er, ey + er * 1.2], fill=INK)
            d.ellipse([ex - er * .2, ey - er * .9, ex + er * .4, ey - er * .2], fill=(255, 255, 255))
        if e == "angry":
            for ex2, ey2 in [(ex, ey)]:
                lean = 1 if ex2 < fx else -1 if ex2 > fx else 0
                d.line([(ex2 - er * 1.6, ey2 - er * (2.4 + 1.0 * lean)), (ex2 + er * 1.6, ey2 - er * (2.4 - 1.0 * lean))],
                       fill=INK, width=max(4, int(s * .05)))
        if e == "sad":
            lean = 1 if ex < fx else -1 if ex > fx else 0
            d.line([(ex - er * 1.5, ey - er * (2.2 - .8 * lean)), (ex + er * 1.5, ey - er * (2.2 + .8 * lean))],
                   fill=INK, width=max(3, int(s * .035)))
    mw, my, lw = s * .22, fy + s * .18, max(4, int(s * .05))
    if e in ("happy", "in love"):
        d.chord([fx - mw, my - mw * .9, fx + mw, my + mw * .7], 0, 180, fill=(120, 20, 30), outline=INK, width=lw)
    elif e == "sad":
        d.arc([fx - mw, my, fx + mw, my + mw * 1.2], 200, 340, fill=INK, width=lw)
        tx, ty = eyes[0][0] - er * .3, eyes[0][1] + er * 1.8
        d.ellipse([tx - er * .45, ty, tx + er * .45, ty + er * 1.3], fill=(80, 170, 255))
    elif e == "angry":
        d.rectangle([fx - mw * .8, my + mw * .1, fx + mw * .8, my + mw * .45], fill=INK)
    elif e == "neutral":
        d.line([(fx - mw * .7, my + mw * .2), (fx + mw * .7, my + mw * .2)], fill=INK, width=lw)
    if e == "in love":
        _heart(d, fx + s * .55, fy - s * .55, s * .12, (230, 30, 70))


def _draw_sunglasses(d, spec, fx, fy, s):
    n = spec.monster.eyes if spec.object == "monster" else 2
    eyes = _eye_positions(fx, fy, s, n)
    r = s * (.15 if n != 3 else .12)
    for ex, ey in eyes:
        d.rounded_rectangle([ex - r, ey - r * .75, ex + r, ey + r * .75], int(r * .4), fill=(15, 15, 20))
        if spec.emotion == "in love":  # the lenses hide the heart eyes: hearts on the lenses keep it readable
            _heart(d, ex, ey, r * .8, (230, 30, 70))
    xs = [x for x, _ in eyes]
    d.line([(min(xs) - r, eyes[0][1] - r * .5), (max(xs) + r, eyes[-1][1] - r * .5)], fill=(15, 15, 20), width=5)


def _draw_hat(d, cx, top, s, ol):
    h = s * .55
    d.polygon([(cx - s * .28, top + 6), (cx, top - h), (cx + s * .28, top + 6)], fill=(60, 200, 220), **ol)
    d.line([(cx - s * .15, top - h * .35), (cx + s * .15, top - h * .35)], fill=(250, 250, 250), width=6)
    d.ellipse([cx - 9, top - h - 9, cx + 9, top - h + 9], fill=(250, 230, 60), **ol)


def _draw_held(d, item, x, y, r, ol):
    if item == "burger":
        d.chord([x - r, y - r, x + r, y + r * .4], 180, 360, fill=(225, 160, 70), **ol)
        d.rectangle([x - r * 1.05, y - r * .35, x + r * 1.05, y - r * .1], fill=(70, 180, 50))
        d.rounded_rectangle([x - r, y - r * .15, x + r, y + r * .25], 6, fill=(110, 55, 30), **ol)
        d.rounded_rectangle([x - r, y + r * .25, x + r, y + r * .6], 8, fill=(225, 160, 70), **ol)
    elif item == "cake":
        d.rectangle([x - r, y - r * .4, x + r, y + r * .7], fill=(250, 235, 240), **ol)
        d.rectangle([x - r, y - r * .4, x + r, y - r * .1], fill=(240, 110, 160))
        d.rectangle([x - r, y + r * .2, x + r, y + r * .35], fill=(240, 110, 160))
        d.rectangle([x - 4, y - r * 1.0, x + 4, y - r * .4], fill=(80, 150, 240))
        d.ellipse([x - 6, y - r * 1.3, x + 6, y - r * 1.0], fill=(255, 200, 40))
    elif item == "ice cream":
        d.polygon([(x - r * .6, y - r * .1), (x + r * .6, y - r * .1), (x, y + r * 1.1)], fill=(225, 175, 100), **ol)
        d.ellipse([x - r * .7, y - r * .9, x + r * .7, y + r * .15], fill=(250, 245, 235), **ol)
        d.ellipse([x - r * .3, y - r * 1.2, x + r * .3, y - r * .6], fill=(240, 60, 80), **ol)


def _flower(d, x, y, r):
    for k in range(5):
        a = k * 2 * math.pi / 5
        px, py = x + r * .7 * math.cos(a), y + r * .7 * math.sin(a)
        d.ellipse([px - r * .5, py - r * .5, px + r * .5, py + r * .5], fill=(255, 250, 255))
    d.ellipse([x - r * .4, y - r * .4, x + r * .4, y + r * .4], fill=(255, 200, 20))


def _draw_flowers(d, amount, rng, obj_box):
    n = {"none": 0, "few": rng.randint(2, 3), "many": rng.randint(9, 13)}[amount]
    placed = 0
    for _ in range(200):
        if placed >= n:
            break
        x, y = rng.uniform(14, CANVAS - 14), rng.uniform(CANVAS * .5, CANVAS - 14)
        x0, y0, x1, y1 = obj_box
        if x0 + 10 < x < x1 - 10 and y0 + 10 < y < y1 - 10:
            continue
        _flower(d, x, y, rng.uniform(9, 13))
        placed += 1


# ---------------------------------------------------------------- styles
def _apply_style(im: Image.Image, style: str, rng: random.Random) -> Image.Image:
    if style == "sketch":
        gray = im.convert("L")
        edges = gray.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 28 else 0).filter(ImageFilter.MaxFilter(5))
        ink = Image.eval(im, lambda v: int(v * 0.75))
        paper = Image.blend(im, Image.new("RGB", im.size, (252, 250, 242)), 0.72)  # a light wash of colour
        return Image.composite(ink, paper, edges)
    if style == "painting":
        im = im.filter(ImageFilter.GaussianBlur(1.2))
        strokes = im.copy()
        sd = ImageDraw.Draw(strokes)
        px = im.load()
        for _ in range(1400):
            x, y = rng.randrange(CANVAS), rng.randrange(CANVAS)
            c = tuple(min(255, max(0, v + rng.randint(-18, 18))) for v in px[x, y])
            a, L = rng.uniform(0.5, 1.0), rng.uniform(4, 9)
            sd.line([(x - L * math.cos(a), y - L * math.sin(a)), (x + L * math.cos(a), y + L * math.sin(a))], fill=c, width=5)
        out = Image.blend(im, strokes, 0.55)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 10, (CANVAS, CANVAS, 1))  # canvas grain
        return Image.fromarray(np.clip(np.asarray(out, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    if style == "pixel art":
        small = im.resize((32, 32), Image.Resampling.BOX).quantize(24, dither=Image.Dither.NONE).convert("RGB")
        return small.resize(im.size, Image.Resampling.NEAREST)
    return im


def _sticker_border(im: Image.Image, mask: Image.Image) -> Image.Image:
    """The white cut-out border of a die-cut sticker."""
    grown = mask.filter(ImageFilter.MaxFilter(15))
    white = Image.new("RGB", im.size, (255, 255, 255))
    return Image.composite(white, im, grown)


# ---------------------------------------------------------------- entry point
def _layout(spec: StickerSpec) -> tuple[random.Random, tuple[float, float, float, float]]:
    """The object's box on the canvas, and the seeded stream that goes on to draw the background."""
    rng = random.Random(spec.seed)
    w = CANVAS * rng.uniform(0.46, 0.66)
    cx = CANVAS / 2 + rng.uniform(-0.09, 0.09) * CANVAS - (CANVAS * 0.06 if spec.held_item != "none" else 0)
    cy = CANVAS / 2 + rng.uniform(-0.06, 0.08) * CANVAS
    return rng, (cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2)


class _NullDraw:
    """Accepts every drawing call and draws nothing: runs the layout code for its return values."""

    def __getattr__(self, name):
        return lambda *args, **kw: None


def face_box(spec: StickerSpec, size: int = 64) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) in pixels at `size` holding the face's eyes, brows and mouth; None without a face.

    Cheap (no drawing): training uses it to weight the loss on faces, which are a few pixels at 64x64.
    """
    if spec.emotion == "none":
        return None
    _, box = _layout(spec)
    fx, fy, s, _ = _draw_body(_NullDraw(), spec, box, random.Random(spec.seed + 1), _outline(spec.style))
    top, right = (0.7, 0.7) if spec.emotion == "in love" else (0.45, 0.48)  # in love: a heart up and right
    f = size / CANVAS
    x0, y0, x1, y1 = (fx - 0.48 * s) * f, (fy - top * s) * f, (fx + right * s) * f, (fy + 0.5 * s) * f
    return (max(0, math.floor(x0)), max(0, math.floor(y0)), min(size, math.ceil(x1)), min(size, math.ceil(y1)))


def render(spec: StickerSpec, size: int = 64, caption_drop: float = 0.0) -> Rendered:
    """Renders `spec` deterministically at `size` x `size`; the caption uses the same seed."""
    from conceptlab.world.attributes import caption

    rng, box = _layout(spec)
    w = box[2] - box[0]
    bg = _background(spec.background, rng)
    layer = Image.new("RGB", bg.size, (0, 0, 0))
    mask = Image.new("L", bg.size, 0)
    ol = _outline(spec.style)
    for target, is_mask in ((layer, False), (mask, True)):
        d = ImageDraw.Draw(target)
        if is_mask:  # the same drawing in white gives the object's silhouette
            d = _MaskDraw(d)
        fx, fy, fs, top = _draw_body(d, spec, box, random.Random(spec.seed + 1), ol)
        if spec.accessory == "hat":
            _draw_hat(d, fx, top, fs, ol)
        if spec.held_item != "none":
            _draw_held(d, spec.held_item, box[2] - w * 0.02, box[3] - w * 0.22, w * 0.2, ol)
        if not is_mask:
            if spec.emotion != "none":
                _draw_face(d, spec, fx, fy, fs)
            if spec.accessory == "sunglasses":
                _draw_sunglasses(d, spec, fx, fy, fs)
    fd = ImageDraw.Draw(bg)
    _draw_flowers(fd, spec.flowers, rng, box)
    if spec.style == "sticker":
        bg = _sticker_border(bg, mask)
    im = Image.composite(layer, bg, mask)
    im = _apply_style(im, spec.style, rng)
    im = im.resize((size, size), Image.Resampling.LANCZOS if spec.style != "pixel art" else Image.Resampling.NEAREST)
    bb = mask.getbbox() or (0, 0, CANVAS, CANVAS)
    f = size / CANVAS
    bbox = tuple(int(round(v * f)) for v in bb)
    small_mask = mask.resize((size, size), Image.Resampling.BOX)
    return Rendered(im, spec.labels(), caption(spec, drop=caption_drop), bbox, spec, small_mask)


class _MaskDraw:
    """Forwards drawing calls with every colour replaced by white, to build the object's mask."""

    def __init__(self, draw: ImageDraw.ImageDraw):
        self._d = draw

    def __getattr__(self, name):
        fn = getattr(self._d, name)

        def call(*args, **kw):
            if "fill" in kw:
                kw["fill"] = 255
            if "outline" in kw:
                kw["outline"] = 255
            return fn(*args, **kw)

        return call
