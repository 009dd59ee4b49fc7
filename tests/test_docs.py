"""The README and docs/ cannot rot: their links resolve, and every command block marked to run does run.

A fenced block right after a `<!-- test: run -->` line is run by bash, in a fresh clone of a
repository with the default data reproduced and committed, after the README's quick start
(one training epoch, to keep the test short). Blocks run in the order of PAGES, each page's
from top to bottom, so a page may use what an earlier block made. Blocks too slow to run here
(the benchmark, real data) carry no marker.
"""

from __future__ import annotations

import csv
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
    """A reader's fresh clone after the quick start, and every marked block of PAGES run in it, in order.

    The maintainer's repository reproduces the default data (one training epoch) and commits the
    lock and the small outputs; the reader clones it and runs `dvc repro` with no DVC cache, so
    every stage runs again, and the README's first block checks that nothing differs.
    """
    root = tmp_path_factory.mktemp("docs")
    main = make_repo(root, synthetic={}, train={"epochs": 1})
    result = dvc(main, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "reproduced"]):
        assert run(main, *cmd).returncode == 0, cmd
    repo = root / "clone"
    assert run(root, "git", "clone", "-q", str(main), str(repo)).returncode == 0
    for cmd in (["git", "config", "user.email", "reader@example.com"], ["git", "config", "user.name", "Reader"]):
        assert run(repo, *cmd).returncode == 0, cmd
    result = dvc(repo, "repro")  # the quick start
    assert result.returncode == 0 and "Running stage 'train'" in result.stdout, result.stdout + result.stderr
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


@pytest.mark.e2e
def test_the_last_experiment_diffs_against_main_read_from_git(ran):
    """After the blocks the workspace holds docs/negatives.md's also_view experiment; main's numbers come from git."""
    repo, _ = ran
    diff = dvc(repo, "metrics", "diff", "main")  # main's metrics are in git: no remote needed
    assert diff.returncode == 0 and "failed" not in (diff.stdout + diff.stderr).lower(), diff.stderr
    changed = dvc(repo, "exp", "diff")
    # the model's metrics that moved (on tiny data one may not: recall@10 is a count of hits over few users)
    assert changed.returncode == 0 and re.search(r"^metrics/eval.json +model\.", changed.stdout, flags=re.M)
    assert re.search(r"^params.yaml +sampler +in_batch +also_view", changed.stdout, flags=re.M)
    rows = list(csv.DictReader(dvc(repo, "exp", "show", "--no-pager", "--csv").stdout.splitlines()))
    main = next(row for row in rows if row["rev"] == "main")
    assert float(main["model.recall@10"]) > 0 and float(main["val_recall@10"]) > 0
