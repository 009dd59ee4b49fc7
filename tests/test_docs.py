"""The README and docs/ cannot rot: their links resolve, and every command block marked to run does run.

A fenced block right after a `<!-- test: run -->` line is run by bash, in a copy of the
repository in the state a reader has after the README's quick start (the default data
reproduced and committed; one training epoch, to keep the test short). Blocks run in the order
of PAGES, each page's from top to bottom, so a page may use what an earlier block made. Blocks
too slow to run here (the benchmark, real data) carry no marker.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from test_pipeline import REPO, dvc, env, make_repo, run

MARKER = "<!-- test: run -->"
PAGES = ["README.md", "docs/pipeline.md", "docs/evaluation.md", "docs/negatives.md"]  # the order blocks run in
BLOCK = re.compile(r"^" + re.escape(MARKER) + r"\n```[a-z]*\n(.*?)^```$", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def marked_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced blocks that directly follow a MARKER line."""
    return BLOCK.findall(markdown)


def test_only_the_fenced_blocks_right_after_a_marker_are_taken():
    page = f"intro\n```bash\nnot this\n```\n{MARKER}\n```bash\ndvc repro\ngit status\n```\ntext\n{MARKER}\n```\nls\n```\n"
    assert marked_blocks(page) == ["dvc repro\ngit status\n", "ls\n"]


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.name)
def test_relative_links_point_at_files_that_exist(page):
    targets = [t for t in LINK.findall(page.read_text()) if not t.startswith(("http://", "https://", "mailto:"))]
    assert [t for t in targets if not (page.parent / t).exists()] == []


def test_the_readme_is_a_front_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for history in ("../shared", "older project", "the targets"):  # words a reader of this repository cannot place
        assert history not in readme
    assert not re.search(r"\bissue \d", readme, flags=re.I)
    assert 'pip install -e ".[test]" && DVC_NO_ANALYTICS=1 python -m pytest' in readme  # what .ci/run runs


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, list[tuple[str, str, subprocess.CompletedProcess]]]:
    """A reader's clone after the quick start, and every marked block of PAGES run in it, in order."""
    repo = make_repo(tmp_path_factory.mktemp("docs"), synthetic={}, train={"epochs": 1})
    result = dvc(repo, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "reproduced"]):
        assert run(repo, *cmd).returncode == 0, cmd
    results = []
    for page in PAGES:
        for block in marked_blocks((REPO / page).read_text()):
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=repo, env=env(),
                                  capture_output=True, text=True, timeout=900)
            results.append((page, block, done))
    return repo, results


@pytest.mark.e2e
def test_every_marked_block_runs(ran):
    _, results = ran
    assert len(results) >= 5
    failed = [f"{page}:\n{block}\n{done.stdout[-2000:]}{done.stderr[-2000:]}" for page, block, done in results
              if done.returncode != 0 or "error:" in done.stderr]
    assert failed == []


@pytest.mark.e2e
def test_the_readmes_sampler_comparison_writes_a_table_of_every_sampler_and_its_plots(ran):
    repo, _ = ran
    markdown = (repo / "report/samplers.md").read_text()
    labels = [line.split(" | ")[0] for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert sorted(labels[1:5]) == ["| **also_view (bce)**", "| **in_batch (batch_softmax)**", "| **mined (sampled_softmax)**",
                                   "| **out_batch (bce)**"]
    assert labels[5:] == ["| ALS baseline", "| popularity baseline"]
    for image in ("samplers-recall.png", "samplers-training.png"):
        assert f"]({image})" in markdown and (repo / "report" / image).read_bytes().startswith(b"\x89PNG")


@pytest.mark.e2e
def test_the_quick_starts_check_finds_nothing_to_run(ran):
    _, results = ran
    page, block, done = results[0]
    assert page == "README.md" and block.startswith("dvc repro")
    assert "Running stage" not in done.stdout
    assert not re.search(r"^(\?\?| M|M ) ", done.stdout, flags=re.M)  # git status printed nothing
    assert re.search(r"^recall@10 .* (beyond|within) noise$", done.stdout, flags=re.M)
