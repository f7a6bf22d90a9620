import pytest

from torchreid_fgdi.data.synthetic import SyntheticSize, generate

TINY = SyntheticSize(train_ids=12, test_ids=8, max_cams_per_id=3, max_images_per_cam=3)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """The four generated domains at a tiny size, written once per test session."""
    root = tmp_path_factory.mktemp("reid-data")
    generate(str(root), size=TINY, seed=0)
    return str(root)
