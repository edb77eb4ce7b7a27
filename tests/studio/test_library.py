"""The concepts library: what it finds in runs/ and concepts/, and convert, mix, delete and checked imports,
each through the same functions as `conceptlab concepts ...`."""

import os
import pickle

import pytest
import torch

from conceptlab.concepts.formats import Embedding, load_embedding, save_all_formats
from conceptlab.errors import InputError
from conceptlab.studio import actions, library


def _token(ws, where, token, seed):
    vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(seed))
    save_all_formats(Embedding(token, vectors, {"steps": 7, "final_loss": 0.25, "init": "broccoli"}), ws.root / where)
    return vectors


def test_list_convert_mix_delete(ws, tiny_dir):
    a = _token(ws, "runs/r1/a", "<a>", 0)
    b = _token(ws, "runs/r1/b", "<b>", 1)
    (ws.root / "runs" / "r1" / "previews").mkdir()
    (ws.root / "runs" / "r1" / "previews" / "step-000007.png").write_bytes(b"png")
    found = {c.name: c for c in library.list_concepts(ws)}
    assert set(found) == {"runs/r1/a", "runs/r1/b"}
    assert found["runs/r1/a"].summary()["steps"] == 7 and found["runs/r1/a"].preview.name == "step-000007.png"

    path = library.convert(ws, "runs/r1/a", "a1111-pt", token="<a2>")
    converted = load_embedding(path)
    assert converted.token == "<a2>" and torch.equal(converted.vectors, a)

    cache = actions.PipelineCache()
    mixed = actions.mix(ws, cache, "runs/r1/a", "runs/r1/b", 0.25, "<ab>", strip=True, steps=2, model=str(tiny_dir))
    assert torch.allclose(load_embedding(mixed.file).vectors, 0.75 * a + 0.25 * b)
    assert mixed.preview.name == "sweep.png" and mixed.name == "concepts/ab"
    with pytest.raises(InputError, match="one new word"):
        actions.mix(ws, cache, "runs/r1/a", "runs/r1/b", 0.5, "../x", strip=False)

    library.delete(ws, "runs/r1/b")
    assert not (ws.root / "runs" / "r1" / "b").exists() and (ws.root / "runs" / "r1" / "a").exists()
    with pytest.raises(InputError, match="is not in the workspace's library"):
        library.delete(ws, "../../etc")


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless here, but a pickle that calls anything must never be loaded


def test_import_refuses_a_pickle_that_runs_code_and_keeps_good_files(ws, tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"string_to_param": {"*": _RunsCode()}}, protocol=2))
    with pytest.raises(InputError, match="file='evil.pt': was refused: it holds more than plain tensors"):
        library.import_file(ws, evil, "evil")
    assert not (ws.root / "concepts" / "evil").exists()

    good = tmp_path / "cat.pt"
    save_all_formats(Embedding("<cat>", torch.ones(2, 32)), tmp_path / "cat")
    os.replace(tmp_path / "cat" / "cat.a1111.pt", good)
    concept = library.import_file(ws, good, "cat")
    assert concept.token == "<cat>" and concept.file.suffix == ".safetensors"  # stored re-saved, never as uploaded
    with pytest.raises(InputError, match="may hold only letters"):
        library.import_file(ws, good, "../cat")
