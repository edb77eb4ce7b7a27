import json

import pytest
from PIL import Image

from conceptlab.errors import InputError
from conceptlab.world import ATTRIBUTES
from conceptlab.world.export import export_images, read_metadata


def test_export_writes_imagefolder_metadata(tmp_path):
    path = export_images(tmp_path, 6, seed=10, size=32, only={"emotion": {"happy"}})
    rows = read_metadata(tmp_path)
    assert path.name == "metadata.jsonl" and len(rows) == 6
    for row in rows:
        assert set(ATTRIBUTES) <= set(row) and row["emotion"] == "happy"
        assert all(isinstance(row[k], str) for k in ATTRIBUTES)
        assert row["text"] and Image.open(tmp_path / row["file_name"]).size == (32, 32)


def test_export_is_reproducible(tmp_path):
    export_images(tmp_path / "a", 3, seed=4)
    export_images(tmp_path / "b", 3, seed=4)
    a, b = (tmp_path / "a" / "metadata.jsonl").read_text(), (tmp_path / "b" / "metadata.jsonl").read_text()
    assert a == b
    assert (tmp_path / "a" / "000004.png").read_bytes() == (tmp_path / "b" / "000004.png").read_bytes()


@pytest.mark.parametrize("kwargs,flag", [({"n": 0}, "--n"), ({"n": 2, "size": 4}, "--size"),
                                          ({"n": 2, "fmt": "gif"}, "--format")])
def test_export_bad_input(tmp_path, kwargs, flag):
    with pytest.raises(InputError, match=flag):
        export_images(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_export_contradicting_filters(tmp_path):
    with pytest.raises(InputError, match="--only/--exclude"):
        export_images(tmp_path, 2, only={"emotion": {"happy"}}, exclude={"emotion": {"happy"}})


def test_export_to_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        export_images(f, 2)
    assert json.dumps  # the file is untouched
    assert f.read_text() == "x"


def test_balanced_export_shows_each_value_equally_often_in_one_folder(tmp_path):
    from collections import Counter

    from conceptlab.world.export import export_balanced, export_images, read_metadata

    export_balanced(tmp_path / "b", 2, "emotion", ("happy", "sad", "angry"), seed=40, only={"object": {"monster"}},
                    masks=True)
    rows = read_metadata(tmp_path / "b")
    assert Counter(r["emotion"] for r in rows) == {"happy": 2, "sad": 2, "angry": 2}
    assert {r["object"] for r in rows} == {"monster"} and len({r["file_name"] for r in rows}) == 6
    assert all((tmp_path / "b" / r["file_name"]).is_file() and (tmp_path / "b" / "masks" / r["file_name"]).is_file()
               for r in rows)
    # each value's renders are what export_images draws from that value's seeds
    export_images(tmp_path / "sad", 2, seed=65, only={"object": {"monster"}, "emotion": {"sad"}})
    assert [r["text"] for r in read_metadata(tmp_path / "sad")] == [r["text"] for r in rows if r["emotion"] == "sad"]
    with pytest.raises(InputError, match=r"renders per emotion \(per_value\)"):
        export_balanced(tmp_path / "x", 30, "emotion", ("happy",))


def test_cover_cells_balance_every_attribute_and_repeat_no_combination_until_all_are_used():
    """Against a count: 3 attributes of 2, 3 and 2 values (12 combinations), 18 cells."""
    from collections import Counter
    from itertools import product

    from conceptlab.world.export import cover_cells

    values = {"a": ["x", "y"], "b": ["p", "q", "r"], "c": ["u", "v"]}
    cells = cover_cells(values, 18)
    combos = [tuple(c[k] for k in values) for c in cells]
    assert sorted(combos[:12]) == sorted(product(*values.values()))  # every combination once, first
    assert len(set(combos[12:])) == 6  # then a fresh round
    for k, vs in values.items():
        counts = Counter(c[k] for c in cells)
        assert set(counts) == set(vs) and max(counts.values()) - min(counts.values()) <= 1
    with pytest.raises(InputError, match="cells"):
        from conceptlab.world.export import export_cells

        export_cells("unused", [])
