"""The sticker world: a procedural renderer of labelled stickers with captions."""

from conceptlab.world.attributes import (
    ATTRIBUTES,
    INDIVIDUALS,
    Monster,
    StickerSpec,
    caption,
    parse_filters,
    sample_spec,
)
from conceptlab.world.render import Rendered, face_box, render

__all__ = ["ATTRIBUTES", "INDIVIDUALS", "Monster", "StickerSpec", "Rendered", "caption", "face_box", "parse_filters",
           "render", "sample_spec"]
