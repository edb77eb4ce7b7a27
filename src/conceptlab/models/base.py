"""The shipped base model: what it was kept from seeing, and where it lives."""

from __future__ import annotations

from dataclasses import dataclass, field

from conceptlab.world import StickerSpec


@dataclass
class HeldOut:
    """What the base model never sees, so personalization has something real to learn."""

    faceless_only: tuple[str, ...] = ()  # these objects appear only with emotion "none"
    # these objects keep their face on only this share of their images (the rest are drawn with emotion
    # "none"): the model has seen a face on them, rarely, as SD has seen few cartoon vegetables with faces
    rare_faces: dict[str, float] = field(default_factory=lambda: {"broccoli": 0.1})
    styles: tuple[str, ...] = ("pixel art",)
    named_individuals: bool = True  # the named monsters (DreamBooth subjects) never appear
    # attribute pairs never shown together; the model is scored on them as unseen combinations
    combinations: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
        (("object", "apple"), ("colour", "blue")),
        (("object", "star"), ("background", "beach")),
        (("object", "cloud"), ("emotion", "angry")),
        (("object", "fish"), ("style", "sketch")),
    )

    def faceless(self, obj: str) -> bool:
        """True when faces on `obj` are held out entirely or rare (prompts asking for them are not 'seen')."""
        return obj in self.faceless_only or obj in self.rare_faces

    def keeps_face(self, spec: StickerSpec, draw: float) -> bool:
        """Whether a training image may show `spec`'s face; `draw` is a uniform number in [0, 1)."""
        if spec.object in self.faceless_only:
            return False
        return draw < self.rare_faces.get(spec.object, 1.0)

    def allows(self, spec: StickerSpec) -> bool:
        labels = spec.labels()
        return not any(all(labels[k] == v for k, v in combo) for combo in self.combinations)
