import math

import pytest
import torch

from conceptlab.concepts.formats import Embedding
from conceptlab.concepts.mixing import mix_embeddings, parse_weights, slerp
from conceptlab.errors import InputError


def e(token, *rows):
    return Embedding(token, torch.tensor(rows, dtype=torch.float32))


def test_lerp_is_the_weighted_sum():
    a, b = e("<a>", [1.0, 0.0]), e("<b>", [0.0, 2.0])
    mixed = mix_embeddings([a, b], parse_weights("0.3", 2), "<m>")
    assert torch.allclose(mixed.vectors, torch.tensor([[0.7, 0.6]]))
    assert mixed.meta["weights"] == [0.7, 0.3]


def test_slerp_matches_the_closed_form_on_a_quarter_circle():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    t = 0.25
    assert torch.allclose(slerp(a, b, t), torch.tensor([[math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)]]),
                          atol=1e-6)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)


def test_three_concepts_with_weights():
    a, b, c = e("<a>", [3.0]), e("<b>", [6.0]), e("<c>", [9.0])
    mixed = mix_embeddings([a, b, c], parse_weights("0.2,0.3,0.5", 3), "<m>")
    assert torch.allclose(mixed.vectors, torch.tensor([[0.6 + 1.8 + 4.5]]))


@pytest.mark.parametrize("weights,method,match", [([0.5, 0.6], "lerp", "sum to 1"), ([0.5, 0.5], "cubic", "unknown"),
                                                  ([1.0], "lerp", "one weight per concept")])
def test_bad_mixes(weights, method, match):
    with pytest.raises(InputError, match=match):
        mix_embeddings([e("<a>", [1.0]), e("<b>", [2.0])], weights, "<m>", method)


def test_shapes_must_match():
    with pytest.raises(InputError, match="different shapes"):
        mix_embeddings([e("<a>", [1.0, 2.0]), e("<b>", [1.0, 2.0], [3.0, 4.0])], [0.5, 0.5], "<m>")
