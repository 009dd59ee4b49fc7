"""gamerec report: the samplers side by side and a pull request against its base, as markdown and PNG plots."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gamerec import experiments, report
from gamerec.errors import GamerecError

PNG = b"\x89PNG\r\n\x1a\n"


def run_of(label: str, model: float, als: float = 0.3, epochs: int = 3) -> report.Run:
    """A run as read from a revision: metrics, recall@K for K = 1..3 and two DVCLive curves."""
    metrics = {scorer: {"recall@50": value + 0.2, "recall@10": value, "ndcg@10": value / 2, "auc": 0.8,
                        "hit_rate@10": value} for scorer, value in (("model", model), ("als", als), ("popularity", 0.1))}
    recall = pd.DataFrame({"k": [1, 2, 3], "model": [model / 3, model / 2, model], "als": [als / 3, als / 2, als],
                           "popularity": [0.01, 0.05, 0.1]})
    steps = list(range(1, epochs + 1))
    curves = {"loss": pd.DataFrame({"step": steps, "loss": [1.0 / s for s in steps]}),
              "val_recall@10": pd.DataFrame({"step": steps, "val_recall@10": [model * s / epochs for s in steps]})}
    return report.Run(label, label.split()[0], {}, metrics, {"val_recall@10": model, "best_epoch": epochs}, recall,
                      curves)


def test_shown_metrics_are_grouped_in_order_with_cutoffs_ascending():
    keys = ["mrr", "recall@50", "auc_also_view", "recall@100", "auc", "hit_rate@10", "ndcg@10", "recall@10"]
    assert report.shown_metrics(dict.fromkeys(keys, 0.0)) == ["recall@10", "recall@50", "recall@100", "ndcg@10",
                                                              "mrr", "auc", "auc_also_view"]


def test_the_table_has_a_row_per_model_and_one_per_baseline_when_every_run_measured_the_same():
    lines = report.metrics_table([run_of("in_batch (batch_softmax)", 0.4), run_of("out_batch (bce)", 0.35)])
    assert lines[0] == "| scorer | experiment | recall@10 | recall@50 | ndcg@10 | auc | val_recall@10 | best epoch |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| **in_batch (batch_softmax)**", "| **out_batch (bce)**", "| ALS baseline", "| popularity baseline"]
    assert lines[2].split(" | ")[2:4] == ["0.4000", "0.6000"]


def test_baselines_that_differ_between_runs_get_a_row_each_and_a_missing_one_none():
    a, b = run_of("a", 0.4, als=0.3), run_of("b", 0.4, als=0.2)
    assert [suffix for suffix, _ in report.distinct([a, b], lambda run: run.metrics["als"])] == [" [a]", " [b]"]
    del a.metrics["als"], b.metrics["als"]
    a.recall["als"] = b.recall["als"] = float("nan")  # ALS disabled: evaluate writes a blank column
    assert report.distinct([a, b], lambda run: run.metrics.get("als")) == []
    assert report.distinct([a, b], lambda run: run.recall.get("als")) == []
    assert [row.split(" | ")[0] for row in report.metrics_table([a, b])[2:]] == ["| **a**", "| **b**",
                                                                                "| popularity baseline"]


@pytest.fixture()
def figures(monkeypatch) -> list:
    """The figures the plot functions save, kept open for the test to look at."""
    saved = []
    monkeypatch.setattr(report, "_save", lambda fig, path, **_: saved.append(fig) or Path(path).write_bytes(PNG))
    return saved


def test_recall_plot_names_each_run_and_draws_each_baseline_once(figures, tmp_path):
    report.plot_recall([run_of("in_batch (batch_softmax)", 0.4), run_of("mined (sampled_softmax)", 0.3)],
                       tmp_path / "r.png", "recall@K of the samplers")
    ax = figures[0].axes[0]
    assert ax.get_title() == "recall@K of the samplers" and ax.get_xlabel().startswith("K")
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "in_batch (batch_softmax)", "mined (sampled_softmax)", "ALS baseline", "popularity baseline"]
    colours = [line.get_color() for line in ax.get_lines()]
    assert len(set(colours)) == 4  # every line its own colour: no two scorers alike
    assert (tmp_path / "r.png").read_bytes().startswith(PNG)


def test_training_plot_has_a_titled_panel_per_curve_with_the_epoch_on_x(figures, tmp_path):
    report.plot_training([run_of("in_batch (batch_softmax)", 0.4, epochs=4), run_of("out_batch (bce)", 0.3)],
                         tmp_path / "t.png")
    loss, recall = figures[0].axes
    assert loss.get_title().startswith("Training loss per epoch") and recall.get_title() == "Validation recall@10 per epoch"
    assert loss.get_xlabel() == recall.get_xlabel() == "epoch"
    assert list(loss.get_lines()[0].get_xdata()) == [1, 2, 3, 4]  # DVCLive's step is the epoch
    assert loss.get_yscale() == "log"  # 1.0 down to 0.25: four times apart
    legend = figures[0].legends[0]  # one legend below both panels
    assert [t.get_text() for t in legend.get_texts()] == ["in_batch (batch_softmax)", "out_batch (bce)"]


def test_a_diff_table_without_rows_is_nothing_changed():
    header = "| Path   | Metric   | main   | workspace   | Change   |\n|--------|----------|--------|-------------|----------|\n"
    assert report.diff_table(header) == "" and report.diff_table("") == ""
    row = "| params.yaml | train.lr | 0.02 | 0.05 |"
    assert report.diff_table(header + row + "\n").splitlines()[-1] == row


def test_waiting_for_the_queue_ends_when_nothing_runs(monkeypatch):
    states = iter([([("a", "Running"), ("b", "Queued")], 1), ([("a", "Success"), ("b", "Running")], 1),
                   ([("a", "Success"), ("b", "Failed")], 0)])
    monkeypatch.setattr(experiments, "queue_status", lambda: next(states))
    report.wait_for_queue(poll=0)
    assert next(states, None) is None  # polled until the last state


def test_queued_experiments_that_no_worker_runs_are_an_error(monkeypatch):
    monkeypatch.setattr(experiments, "queue_status", lambda: ([("a", "Queued")], 0))
    with pytest.raises(GamerecError, match="1 experiments are queued and no worker runs them"):
        report.wait_for_queue(poll=0)


# End to end: two commits of a tiny pipeline that differ in one param.


@pytest.fixture(scope="module")
def pr_repo(tmp_path_factory, tiny_repo) -> Path:
    """main: the tiny pipeline reproduced and committed; branch `pr`: one param changed, reproduced, committed."""
    from conftest import copy_repo
    from test_pipeline import dvc, edit_params, run

    repo = copy_repo(tiny_repo, tmp_path_factory.mktemp("report"))
    assert run(repo, "git", "checkout", "-q", "-b", "pr").returncode == 0
    edit_params(repo, train={"lr": 0.05})
    result = dvc(repo, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "pr"]):
        assert run(repo, *cmd).returncode == 0, cmd
    return repo


def gamerec(repo: Path, *args: str):
    from test_pipeline import run

    return run(repo, str(Path(sys.executable).parent / "gamerec"), *args)


def linked_images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


@pytest.mark.e2e
def test_pr_report_holds_the_metrics_and_params_diffs_and_links_plots_that_exist(pr_repo):
    from test_pipeline import run

    result = gamerec(pr_repo, "report", "pr", "--base", "main", "--out", "report")
    assert result.returncode == 0, result.stderr
    markdown = (pr_repo / "report/pr.md").read_text()
    assert result.stdout == markdown and markdown.startswith(report.PR_MARKER)
    metrics = markdown.split("### Metrics")[1].split("### Params")[0]
    assert re.search(r"\| metrics/eval.json +\| model.recall@10 +\|", metrics)
    assert "| Path " in metrics and "| main " in metrics and "popularity." not in metrics  # baselines do not move
    params = markdown.split("### Params")[1].split("### Plots")[0]
    main_lr = yaml.safe_load(run(pr_repo, "git", "show", "main:params.yaml").stdout)["train"]["lr"]
    assert main_lr != 0.05 and re.search(rf"\| params.yaml +\| train.lr +\| {re.escape(str(main_lr))} +\| 0.05 +\|", params)
    assert len(re.findall(r"^\| params.yaml", params, flags=re.M)) == 1  # the one param that differs
    images = linked_images(markdown)
    assert images == ["pr-recall.png", "pr-training.png"]
    assert all((pr_repo / "report" / image).read_bytes().startswith(PNG) for image in images)


@pytest.mark.e2e
def test_pr_report_against_its_own_commit_says_nothing_changed(pr_repo):
    result = gamerec(pr_repo, "report", "pr", "--base", "pr", "--out", "same")
    assert result.returncode == 0, result.stderr
    assert "No metric changed." in result.stdout and "No param changed." in result.stdout


@pytest.mark.e2e
def test_pr_report_against_an_unknown_base_is_one_error_line(pr_repo):
    result = gamerec(pr_repo, "report", "pr", "--base", "nosuchbranch")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: the pipeline's outputs at nosuchbranch cannot be read")


@pytest.mark.e2e
def test_a_samplers_report_without_finished_experiments_is_one_error_line(pr_repo):
    """(tests/test_docs.py runs the README's comparison of the four samplers, report included.)"""
    none = gamerec(pr_repo, "report", "samplers", "--out", "report")
    assert none.returncode == 1 and none.stderr.startswith("error: no finished experiment of HEAD: queue the samplers")
    missing = gamerec(pr_repo, "report", "samplers", "--exp", "nobody")
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no finished experiment named nobody"
