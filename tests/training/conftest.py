import pytest

from conceptlab.world.export import export_images


@pytest.fixture(scope="session")
def concept_dirs(tmp_path_factory):
    """Two small concept folders: faced broccoli stickers and happy emoji (the seed's two concepts)."""
    root = tmp_path_factory.mktemp("concepts")
    export_images(root / "broccoli", 4, seed=0, size=32, only={"object": {"broccoli"}, "emotion": {"happy"}})
    export_images(root / "emoji", 3, seed=10, size=32, only={"object": {"emoji"}, "emotion": {"happy"}})
    return root
