"""The shipped base model: what it was kept from seeing, and where it lives."""

from __future__ import annotations

from dataclasses import dataclass

from conceptlab.world import StickerSpec


@dataclass
class HeldOut:
    """What the base model never sees, so personalization has something real to learn."""

    faceless_only: tuple[str, ...] = ("broccoli",)  # these objects appear only with emotion "none"
    styles: tuple[str, ...] = ("pixel art",)
    named_individuals: bool = True  # the named monsters (DreamBooth subjects) never appear
    # attribute pairs never shown together; the model is scored on them as unseen combinations
    combinations: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
        (("object", "apple"), ("colour", "blue")),
        (("object", "star"), ("background", "beach")),
        (("object", "cloud"), ("emotion", "angry")),
        (("object", "fish"), ("style", "sketch")),
    )

    def allows(self, spec: StickerSpec) -> bool:
        labels = spec.labels()
        return not any(all(labels[k] == v for k, v in combo) for combo in self.combinations)
