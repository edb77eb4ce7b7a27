import pickle

import numpy as np
import pytest
import torch

from conceptlab.concepts.formats import FORMATS, Embedding, detect_format, load_embedding, save_all_formats, save_embedding
from conceptlab.errors import InputError


@pytest.fixture
def emb():
    return Embedding("<broccoli>", torch.randn(3, 32, generator=torch.Generator().manual_seed(0)),
                     {"base_model": "tiny", "steps": 10, "init": "broccoli"})


def test_a_safetensors_header_whose_length_starts_with_a_pickle_byte_is_still_safetensors(emb, tmp_path):
    """A safetensors file begins with its header's length (8 bytes, little-endian); when that length's first byte
    is 0x80 it looks like a legacy pickle's, and such a file was once read as an A1111 .pt and refused."""
    for pad in range(300):
        path = save_embedding(Embedding(emb.token, emb.vectors, {**emb.meta, "pad": "x" * pad}),
                              tmp_path / f"e{pad}.safetensors", "diffusers")
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length starting with 0x80")
    assert detect_format(path) == "diffusers"
    assert torch.equal(load_embedding(path, token="<broccoli>").vectors, emb.vectors)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "sdxl"])
def test_every_format_round_trips_by_content(emb, tmp_path, fmt):
    path = save_embedding(emb, tmp_path / "file.weird-extension", fmt)
    assert detect_format(path) in ({"a1111-safetensors": "kohya"}.get(fmt, fmt),)
    back = load_embedding(path, token="<broccoli>")
    assert torch.equal(back.vectors, emb.vectors)
    assert back.meta.get("base_model") == "tiny" or fmt == "a1111-pt" and back.meta["base_model"] == "tiny"


def test_all_formats_carry_metadata(emb, tmp_path):
    written = save_all_formats(emb, tmp_path)
    assert written["diffusers"].name == "learned_embeds.safetensors"
    for fmt, path in written.items():
        back = load_embedding(path)
        assert back.token == "<broccoli>" or fmt in ("kohya", "a1111-safetensors") and back.token
        assert back.meta.get("steps") == 10, fmt
        assert back.meta.get("vectors") == 3, fmt


def test_numpy_file_holds_only_the_vectors(emb, tmp_path):
    path = save_embedding(emb, tmp_path / "c.npy", "numpy")
    arr = np.load(path, allow_pickle=False)
    assert arr.shape == (3, 32)


def test_a1111_pt_holds_plain_tensors_only(emb, tmp_path):
    path = save_embedding(emb, tmp_path / "c.pt", "a1111-pt")
    data = torch.load(path, weights_only=True)
    assert data["name"] == "<broccoli>" and torch.equal(data["string_to_param"]["*"], emb.vectors)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/conceptlab-pwned",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    import os

    marker = "/tmp/conceptlab-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "payload": _Evil()}, path)
    with pytest.raises(InputError, match="refused"):
        load_embedding(path)
    raw = tmp_path / "evil.bin"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(InputError, match="refused"):
        load_embedding(raw)
    assert not os.path.exists(marker)


def test_unknown_file_is_a_clear_error(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_text("hello")
    with pytest.raises(InputError, match="not an embedding file"):
        load_embedding(f)


def test_sdxl_layout_round_trips_and_single_encoder_formats_refuse_it(tmp_path):
    emb = Embedding("<b>", torch.randn(2, 32), {"steps": 3}, {"clip_g": torch.randn(2, 48)})
    path = save_embedding(emb, tmp_path / "x.bin", "sdxl")
    assert detect_format(path) == "sdxl"
    back = load_embedding(path, token="<b>")
    assert torch.equal(back.vectors, emb.vectors) and torch.equal(back.extra["clip_g"], emb.extra["clip_g"])
    assert list(save_all_formats(emb, tmp_path / "all")) == ["sdxl"]
    with pytest.raises(InputError, match="--to sdxl"):
        save_embedding(emb, tmp_path / "y.safetensors", "kohya")
    with pytest.raises(InputError, match="clip_g"):
        save_embedding(Embedding("<c>", torch.randn(1, 32)), tmp_path / "z.safetensors", "sdxl")
