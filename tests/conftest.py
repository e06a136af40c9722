import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BEAUTY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beauty"


@pytest.fixture(autouse=True)
def _subnormals_back_on():
    """`mmesid` (cli.main, run in-process by many tests) flushes subnormal floats to zero for the rest of
    its process; a test process runs many commands and other code (hypothesis refuses to run under
    FTZ), so each test starts from IEEE arithmetic again."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


@pytest.fixture(scope="session")
def synthetic_data():
    from mmesid.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(n_users=300, n_items=120, seed=0))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory, synthetic_data):
    path = tmp_path_factory.mktemp("syn") / "prepared"
    synthetic_data.save(path)
    return path


def run_cli(*args: str) -> int:
    from mmesid.cli import main

    return main([str(a) for a in args])
