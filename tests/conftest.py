"""Shared test settings and fixtures."""

import os
import shutil
from pathlib import Path

import pytest

# Small real public samples live beside the repository (never inside it); tests that use
# them skip cleanly when the folder is absent.
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """A tiny prepared data set, built by the real generator, reader and prepare step."""
    from gamerec.config import PrepareParams, SyntheticParams
    from gamerec.data import synthetic
    from gamerec.data.prepare import prepare, write_prepared
    from gamerec.data.readers import read_raw

    root = tmp_path_factory.mktemp("tiny")
    raw = root / "raw"
    raw.mkdir()
    tiny = SyntheticParams(users=300, items=120, interactions=5000, genres=4, platforms=3, brands=12)
    synthetic.generate(tiny, raw)
    prepared = prepare(read_raw(raw), PrepareParams(raw_dir=str(raw)))
    write_prepared(prepared, root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="session")
def prepared(prepared_dir):
    """The tiny prepared data set, opened by its reader."""
    from gamerec.prepared import Prepared

    return Prepared(prepared_dir)


@pytest.fixture(scope="session")
def tiny_model(prepared):
    """An untrained (seeded) two-tower model over the tiny prepared data, pooling user histories."""
    from gamerec import model
    from gamerec.config import ModelParams

    arch = ModelParams(dim=16, hidden=[], dropout=0.0, temperature=0.1, history=5, user_id=True, causal=True,
                       pooling="mean")
    return model.build(prepared, arch, seed=0).eval()


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """The tiny pipeline reproduced and committed, as a maintainer leaves main; built once a session.

    Tests only read it: one that changes a repository takes its own `copy_repo` of it.
    """
    from test_pipeline import dvc, make_repo, run

    repo = make_repo(tmp_path_factory.mktemp("tiny_repo"))
    result = dvc(repo, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "reproduced"]):
        assert run(repo, *cmd).returncode == 0, cmd
    return repo


def copy_repo(repo: Path, root: Path) -> Path:
    """`repo` (git, DVC cache and workspace) copied to `root`/repo, to change without touching the original."""
    shutil.copytree(repo, root / "repo", symlinks=True)
    return root / "repo"


def repo_params() -> dict:
    """The repository's params.yaml as a mapping (tests write variants of it for stages run by hand)."""
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
