"""Mixing learned concepts: a weighted blend of embeddings (the seed's 'percentage of emoji')."""

from __future__ import annotations

import torch

from conceptlab.concepts.formats import Embedding
from conceptlab.errors import InputError

METHODS = ("lerp", "slerp")


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of each row's direction, with its length interpolated linearly (Shoemake 1985)."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp(min=1e-12), b / nb.clamp(min=1e-12)
    omega = torch.arccos((ua * ub).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))  # (K, 1)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    return direction * ((1 - t) * na + t * nb)


def mix_embeddings(embeddings: list[Embedding], weights: list[float], name: str, method: str = "lerp") -> Embedding:
    """A new embedding sum_i w_i * e_i (lerp), or the spherical blend of two (slerp); weights sum to 1."""
    if method not in METHODS:
        raise InputError("--method", method, "unknown mixing method", f"Use one of {METHODS}")
    if len(embeddings) < 2 or len(weights) != len(embeddings):
        raise InputError("--weight", weights, f"need one weight per concept ({len(embeddings)} concepts)",
                         "Give two concepts and --weight W (the share of the second), or one weight per concept")
    if abs(sum(weights) - 1) > 1e-6 or any(w < 0 for w in weights):
        raise InputError("--weight", weights, "weights must be >= 0 and sum to 1", "e.g. --weight 0.3 for 70/30")
    shapes = {tuple(e.vectors.shape) for e in embeddings}
    if len(shapes) > 1:
        raise InputError("concepts", [e.token for e in embeddings], f"have different shapes {sorted(shapes)}",
                         "Mix concepts with the same number of vectors and the same width")
    if method == "slerp":
        if len(embeddings) != 2:
            raise InputError("--method", method, "slerp mixes exactly two concepts", "Use lerp for three or more")
        vectors = slerp(embeddings[0].vectors, embeddings[1].vectors, weights[1])
    else:
        vectors = sum(w * e.vectors for w, e in zip(weights, embeddings))
    meta = {"mixed_from": [e.token for e in embeddings], "weights": weights, "method": method,
            "base_model": embeddings[0].meta.get("base_model", "")}
    return Embedding(name, vectors, meta)


def parse_weights(weight: str | None, n: int) -> list[float]:
    """'0.3' with two concepts -> [0.7, 0.3]; '0.2,0.3,0.5' -> as given (finite, >= 0, summing to 1)."""
    from conceptlab.validation import FRACTION, parse_numbers

    if weight is None:
        return [1 / n] * n
    values = parse_numbers("--weight", weight, FRACTION)
    if len(values) == 1 and n == 2:
        return [1 - values[0], values[0]]
    return values
