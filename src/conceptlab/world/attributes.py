"""The sticker world's vocabulary: attributes, their values, named individuals and captions.

Every attribute is a label column of the exported metadata (Hugging Face imagefolder convention) and a
head of the sticker-world judge, so the names here are the single source of truth for both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OBJECTS = ("apple", "broccoli", "star", "emoji", "cat", "monster", "fish", "cloud")
EMOTIONS = ("happy", "sad", "angry", "in love", "neutral", "none")  # "none": drawn without a face
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
BACKGROUNDS = ("plain", "beach", "snowy mountain", "jungle", "desert", "river")
STYLES = ("sticker", "sketch", "painting", "pixel art")
ACCESSORIES = ("none", "sunglasses", "hat")
HELD_ITEMS = ("none", "burger", "cake", "ice cream")
FLOWERS = ("none", "few", "many")  # the scene element whose amount varies (attention re-weighting)

# The varied class: monsters are built from these features; a named individual fixes all of them.
MONSTER_SHAPES = ("round", "tall", "wide")
MONSTER_EYES = (1, 2, 3)
MONSTER_TOPS = ("none", "horns", "antenna")
MONSTER_PATTERNS = ("plain", "spots", "stripes")


@dataclass(frozen=True)
class Monster:
    """The features that make one monster look like itself."""

    shape: str = "round"
    eyes: int = 2
    top: str = "none"
    pattern: str = "plain"


# Named individuals (DreamBooth subjects): a fixed look and a fixed colour, never in the base model's data.
INDIVIDUALS: dict[str, tuple[Monster, str]] = {
    "tuki": (Monster("round", 3, "antenna", "stripes"), "purple"),
    "bnh": (Monster("tall", 1, "horns", "spots"), "orange"),
    "moxo": (Monster("wide", 2, "horns", "stripes"), "blue"),
}

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "object": OBJECTS,
    "emotion": EMOTIONS,
    "colour": COLOURS,
    "background": BACKGROUNDS,
    "style": STYLES,
    "accessory": ACCESSORIES,
    "held_item": HELD_ITEMS,
    "flowers": FLOWERS,
    "individual": ("none", *INDIVIDUALS),
}


@dataclass(frozen=True)
class StickerSpec:
    """Everything needed to draw one sticker; `seed` drives the remaining randomness (size, position)."""

    object: str = "emoji"
    emotion: str = "happy"
    colour: str = "yellow"
    background: str = "plain"
    style: str = "sticker"
    accessory: str = "none"
    held_item: str = "none"
    flowers: str = "none"
    individual: str = "none"
    monster: Monster = Monster()
    seed: int = 0

    def __post_init__(self):
        for name, values in ATTRIBUTES.items():
            value = getattr(self, name)
            if value not in values:
                raise ValueError(f"{name}={value!r} is not a sticker-world value; choose one of {values}")
        if self.individual != "none" and self.object != "monster":
            raise ValueError(f"individual={self.individual!r} is a monster; set object='monster'")

    def labels(self) -> dict[str, str]:
        """The label columns, as strings named like ATTRIBUTES."""
        return {name: str(getattr(self, name)) for name in ATTRIBUTES}


def _named_looks() -> set[Monster]:
    return {look for look, _ in INDIVIDUALS.values()}


def random_monster(rng: random.Random) -> Monster:
    """A random monster look that is never one of the named individuals."""
    while True:
        look = Monster(
            rng.choice(MONSTER_SHAPES), rng.choice(MONSTER_EYES),
            rng.choice(MONSTER_TOPS), rng.choice(MONSTER_PATTERNS),
        )
        if look not in _named_looks():
            return look


def sample_spec(
    seed: int,
    only: dict[str, set[str]] | None = None,
    exclude: dict[str, set[str]] | None = None,
    individual_rate: float = 0.0,
) -> StickerSpec:
    """Draws a random spec from `seed`, restricted to `only` values and avoiding `exclude`d ones.

    `individual_rate` is the chance that a monster is one of the named individuals (0 for base-model data).
    """
    only, exclude = only or {}, exclude or {}
    rng = random.Random(seed)
    for _ in range(1000):
        values = {}
        for name in ATTRIBUTES:
            if name == "individual":
                continue
            allowed = allowed_values(name, only, exclude)
            if not allowed:
                raise ValueError(f"no value of {name!r} is left after --only/--exclude")
            values[name] = _weighted_choice(rng, name, allowed)
        individual, monster = "none", Monster()
        if values["object"] == "monster":
            named = [n for n in INDIVIDUALS if n in only.get("individual", INDIVIDUALS)
                     and n not in exclude.get("individual", ())]
            allow_none = "none" in only.get("individual", {"none"}) and "none" not in exclude.get("individual", ())
            if named and (not allow_none or rng.random() < individual_rate):
                individual = rng.choice(named)
                monster, values["colour"] = INDIVIDUALS[individual]
            else:
                monster = random_monster(rng)
        spec_values = dict(values, individual=individual, monster=monster, seed=rng.randrange(2**31))
        if _passes(spec_values, only, exclude):
            return StickerSpec(**spec_values)
    raise ValueError(f"could not draw a sticker matching only={only} exclude={exclude}: they contradict")


def allowed_values(name: str, only: dict | None = None, exclude: dict | None = None) -> list[str]:
    """The values of attribute `name` that `only` and `exclude` leave, in the world's order."""
    choices = ATTRIBUTES[name]
    return [v for v in choices if v in (only or {}).get(name, choices) and v not in (exclude or {}).get(name, ())]


def _passes(values: dict, only: dict, exclude: dict) -> bool:
    for name in ATTRIBUTES:
        v = str(values[name])
        if name in only and v not in only[name]:
            return False
        if v in exclude.get(name, ()):
            return False
    return True


# Plain stickers and no extras are the common case, so the model sees clean examples often.
_WEIGHTS = {
    "accessory": {"none": 0.6},
    "held_item": {"none": 0.55},
    "flowers": {"none": 0.6},
    "emotion": {"none": 0.08},
    "background": {"plain": 0.3},
}


def _weighted_choice(rng: random.Random, name: str, allowed: list[str]) -> str:
    special = _WEIGHTS.get(name, {})
    rest = [v for v in allowed if v not in special]
    weights = [special[v] if v in special else (1 - sum(special.get(u, 0) for u in allowed)) / max(len(rest), 1)
               for v in allowed]
    return rng.choices(allowed, weights=[max(w, 1e-6) for w in weights])[0]


_STYLE_PHRASES = {
    "sticker": ("a sticker of {x}", "{x} sticker", "a flat sticker of {x}"),
    "sketch": ("a sketch of {x}", "an outline sketch of {x}", "{x} sketch"),
    "painting": ("a painting of {x}", "an oil painting of {x}", "{x} painting"),
    "pixel art": ("pixel art of {x}", "a pixel art {x}", "{x} in pixel art"),
}
_BACKGROUND_PHRASES = {
    "plain": ("", " on a white background"),
    "beach": (" on a beach", " at the beach"),
    "snowy mountain": (" on a snowy mountain", " in the snowy mountains"),
    "jungle": (" in a jungle", " in the jungle"),
    "desert": (" in a desert", " in the desert"),
    "river": (" by a river", " near a river"),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(spec: StickerSpec, rng: random.Random | None = None, drop: float = 0.0) -> str:
    """A natural caption such as 'a sticker of a happy green apple on a beach'.

    With `drop` > 0, each optional attribute is left out with that probability, so that a model trained
    on the captions also learns what to draw when a prompt does not say.
    """
    rng = rng or random.Random(spec.seed)
    keep = lambda: rng.random() >= drop  # noqa: E731
    noun = spec.object if spec.object != "emoji" else rng.choice(("emoji", "emoji face"))
    colour = f"{spec.colour} " if keep() else ""
    emotion = spec.emotion if spec.emotion not in ("none",) and keep() else ""
    if emotion == "in love":
        core = f"{colour}{noun} in love"
    elif emotion:
        core = f"{emotion} {colour}{noun}"
    else:
        core = f"{colour}{noun}"
    x = f"{_article(core)} {core}"
    extras = []
    if spec.accessory != "none" and keep():
        extras.append(" wearing sunglasses" if spec.accessory == "sunglasses" else " wearing a hat")
    if spec.held_item != "none" and keep():
        extras.append(f" holding {_article(spec.held_item)} {spec.held_item}")
    if spec.flowers != "none" and keep():
        extras.append(" with a few flowers" if spec.flowers == "few" else " with many flowers")
    if keep():
        extras.append(rng.choice(_BACKGROUND_PHRASES[spec.background]))
    style_template = rng.choice(_STYLE_PHRASES[spec.style]) if keep() else "{x}"
    if style_template.startswith("{x}"):
        return style_template.format(x=x) + "".join(extras)
    return style_template.format(x=x + "".join(extras))


def parse_filters(pairs: list[str] | None, argument: str) -> dict[str, set[str]]:
    """Turns ['emotion=happy', 'object=apple,star'] into {'emotion': {'happy'}, 'object': {'apple','star'}}."""
    from conceptlab.errors import InputError

    out: dict[str, set[str]] = {}
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or name not in ATTRIBUTES:
            raise InputError(argument, pair, "expected ATTRIBUTE=VALUE[,VALUE]",
                             f"Use one of the attributes {list(ATTRIBUTES)}")
        for value in raw.split(","):
            if value not in ATTRIBUTES[name]:
                raise InputError(argument, pair, f"{value!r} is not a value of {name}",
                                 f"Choose from {list(ATTRIBUTES[name])}")
            out.setdefault(name, set()).add(value)
    return out

