"""End to end: the real `dvc repro` in a temporary git repository, and stage scripts as users run them."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
from conftest import REAL_DATA as REAL
from conftest import copy_repo, repo_params
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore",
                 ".dvc/config", ".dvc/.gitignore", ".dvc/plots", "stages", "src"]
TINY = {"users": 300, "items": 120, "interactions": 5000}
TINY_TRAIN = {"epochs": 2, "batch_size": 256}

pytestmark = pytest.mark.e2e


def env() -> dict[str, str]:
    """The stages' `python` must be this interpreter (with gamerec installed)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args)


def edit_params(repo: Path, **groups: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for group, values in groups.items():
        if isinstance(values, dict):
            params[group].update(values)
        else:
            params[group] = values
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(root: Path, synthetic: dict = TINY, train: dict = TINY_TRAIN) -> Path:
    """A fresh git + DVC repository holding the project's files, with tiny synthetic params (or those given)."""
    repo = root / "repo"
    for name in PROJECT_FILES:
        src, dst = REPO / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    edit_params(repo, synthetic=synthetic, train=train, sampler="in_batch")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "ci@example.com"],
                ["git", "config", "user.name", "CI"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "init"]):
        assert run(repo, *cmd).returncode == 0, cmd
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_repo) -> Path:
    """The tiny pipeline reproduced and committed, as a maintainer leaves main (lock and small outputs in git)."""
    return copy_repo(tiny_repo, tmp_path_factory.mktemp("e2e"))


def test_repro_builds_outputs_and_reports_data(repo):
    data = json.loads((repo / "reports/data.json").read_text())
    assert data["interactions"] == sum(data["splits"].values()) > 0
    assert data["splits"]["test"] == data["splits"]["val"] == data["users"]  # leave-last-out
    assert 0.5 < data["coverage"]["price"] < 0.8  # about a third missing by design
    assert all(0 < v <= 1 for v in data["coverage"].values())
    assert data["cleaning"]["duplicate_metadata_lines"] > 0
    for name in ("interactions.parquet", "items.parquet", "users.parquet", "text.npz",
                 "also_view.npz", "vocab.json", "stats.json"):
        assert (repo / "data/prepared" / name).is_file()
    assert not list((repo / "data").glob(".*.tmp"))  # atomic writes left no temporaries


def test_second_repro_has_nothing_to_run(repo):
    result = dvc(repo, "repro")
    assert result.returncode == 0
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout
    # cached outputs are ignored by git, the lock and the small outputs committed: nothing changed
    assert run(repo, "git", "status", "--porcelain").stdout == ""
    tracked = run(repo, "git", "ls-files").stdout.split()
    assert {"dvc.lock", "metrics/eval.json", "metrics/train.json", "plots/roc.csv"} <= set(tracked)
    assert not [path for path in tracked if path.startswith(("data/", "models/", "reports/"))]


def test_stage_list_shows_one_stage_per_sampler(repo):
    stages = dvc(repo, "stage", "list").stdout
    for name in ("sample_negatives@out_batch", "sample_negatives@in_batch", "sample_negatives@also_view", "train"):
        assert name in stages


def test_repro_builds_every_negative_set_and_a_loadable_model(repo):
    import torch

    for name in ("out_batch", "in_batch", "also_view"):
        manifest = json.loads((repo / "data/negatives" / name / "manifest.json").read_text())
        assert manifest["sampler"] == name
        assert json.loads((repo / "reports/sampling" / f"{name}.json").read_text())["examples"] > 0
    ckpt = torch.load(repo / "models/model.pt", weights_only=True)
    assert ckpt["sampler"] == "in_batch" and ckpt["config"]["num_items"] > 1
    assert (repo / "dvclive/plots/metrics/loss.tsv").is_file()
    train = json.loads((repo / "metrics/train.json").read_text())
    assert set(train) == {"val_recall@10", "best_epoch"} and 0 <= train["val_recall@10"] <= 1
    assert json.loads((repo / "reports/train.json").read_text())["sampler"] == "in_batch"


def test_cli_recommends_ten_games_the_user_has_not_reviewed(repo):
    with gzip.open(repo / "data/raw/synthetic/Video_Games_5.json.gz", "rt") as f:
        reviews = [json.loads(line) for line in f]
    user = reviews[0]["reviewerID"]
    reviewed = {r["asin"] for r in reviews if r["reviewerID"] == user}
    result = run(repo, str(Path(sys.executable).parent / "gamerec"), "recommend", "--user", user, "-k", "10")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 21 and f"games for user {user} that they do not have" in lines[0]
    asins = [line.split()[1] for line in lines[1::2]]  # each game's line, then the game of theirs it is like
    assert all(line.split()[:3] == ["because", "you", "played"] and line.split()[3] in reviewed for line in lines[2::2])
    assert len(set(asins)) == 10 and not set(asins) & reviewed
    catalogue = {json.loads(line)["asin"] for line in gzip.open(repo / "data/raw/synthetic/meta_Video_Games.json.gz", "rt")}
    assert set(asins) <= catalogue


def test_export_reports_ann_recall_against_exact_search(repo):
    report = json.loads((repo / "reports/export.json").read_text())
    assert report["served"] == "flat" and report["flat"]["recall@10"] == 1.0  # a small catalogue is served exactly
    assert report["hnsw"]["recall@10"] >= 0.98 and report["query_users"] > 0
    assert "query_ms_p50" not in json.dumps(report)  # latencies vary: stderr and the benchmark, not an output
    shown = dvc(repo, "metrics", "show", "reports/export.json")  # a report, readable on demand
    assert shown.returncode == 0 and "hnsw.recall@10" in shown.stdout


def test_switching_sampler_reruns_only_train_and_what_reads_the_model(repo):
    for sampler in ("also_view", "in_batch"):
        result = dvc(repo, "exp", "run", "-S", f"sampler={sampler}")
        assert result.returncode == 0, result.stdout + result.stderr
        # a stage runs, or (back on a sampler seen before) comes from DVC's run cache
        touched = re.findall(r"(?:Running stage|Stage) '([^']+)'(?::| is cached)", result.stdout)
        assert touched == ["choose_sampler", "train", "evaluate", "export"], result.stdout
        assert torch_load_sampler(repo) == sampler


def test_another_samplers_params_rerun_only_that_samplers_negatives(repo):
    result = dvc(repo, "exp", "run", "-S", "sampling.also_view.negatives=8")  # the model trains on in_batch
    run(repo, "git", "checkout", "params.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.findall(r"Running stage '([^']+)'", result.stdout) == ["sample_negatives@also_view"]


def test_editing_the_unseen_draws_makes_evaluate_stale(repo):
    module = repo / "src/gamerec/interactions.py"
    original = module.read_text()
    module.write_text(original.replace("MAX_ROUNDS = 32", "MAX_ROUNDS = 33"))
    try:
        status = dvc(repo, "status").stdout
    finally:
        module.write_text(original)
    stale = re.findall(r"^(\S+):$", status, flags=re.M)
    assert "evaluate" in stale and "sample_negatives@also_view" in stale and "export" not in stale


def torch_load_sampler(repo: Path) -> str:
    import torch

    return torch.load(repo / "models/model.pt", weights_only=True)["sampler"]


def test_unknown_sampler_is_a_one_line_error_listing_valid_names(repo):
    result = dvc(repo, "exp", "run", "-S", "sampler=foo")
    run(repo, "git", "checkout", "params.yaml")
    assert "choose_sampler" in result.stdout + result.stderr  # stopped before train asked DVC for data/negatives/foo
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert errors == ["error: params: sampler = 'foo' is not valid; expected one of out_batch, in_batch, also_view, mined"]


EVAL_KEYS = ["auc", "accuracy", "auc_also_view", "recall@10", "recall@50", "ndcg@10", "ndcg@50",
             "hit_rate@10", "hit_rate@50", "mrr", "coverage@10", "popularity_percentile@10"]


def test_eval_json_has_every_metric_in_range_for_the_model_and_both_baselines(repo):
    result = json.loads((repo / "metrics/eval.json").read_text())
    assert list(result) == ["als", "model", "popularity"]  # a group per scorer, ALS included by default
    for report in result.values():
        assert sorted(report) == sorted(EVAL_KEYS) and not any("." in key for key in report)
        for key in EVAL_KEYS:
            assert 0 <= report[key] <= (100 if key.startswith("popularity_percentile") else 1), key
        assert report["recall@10"] <= report["recall@50"] and report["hit_rate@10"] >= report["recall@10"] - 1e-9
    counts = json.loads((repo / "reports/evaluate.json").read_text())
    assert counts["users_evaluated"] > 0 and counts["catalogue_items"] > 0 and counts["als"]["grid"] == "small"
    roc = (repo / "plots/roc.csv").read_text().splitlines()
    assert roc[0] == "fpr,model,als,popularity" and len(roc) == 102
    curve = (repo / "plots/recall_at_k.csv").read_text().splitlines()
    assert curve[0] == "k,model,als,popularity" and len(curve) == 101
    assert [float(v) for v in curve[10].split(",")[1:]] == [result[s]["recall@10"] for s in ("model", "als", "popularity")]
    epochs = [line.split("\t")[0] for line in (repo / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    assert epochs[0] == "1" and len(epochs) >= json.loads((repo / "metrics/train.json").read_text())["best_epoch"]


EXPERIMENTS = {"attention": ["model.user_tower=attention", "model.layers=1"],
               "two-processes": ["train.processes=2", "sampler=in_batch"]}


@pytest.fixture(scope="module")
def experiments(repo) -> dict[str, subprocess.CompletedProcess]:
    """Two named experiments of the tiny repository: the attention tower, and train in two processes.

    The diff, compare and plots tests read them from DVC; each one's own test `dvc exp apply`s
    it first, so that the workspace holds its outputs whatever ran before.
    """
    done = {}
    for name, settings in EXPERIMENTS.items():
        done[name] = dvc(repo, "exp", "run", "-n", name, *[arg for s in settings for arg in ("-S", s)])
        run(repo, "git", "checkout", "params.yaml")
    return done


def applied(repo: Path, experiments: dict, name: str) -> subprocess.CompletedProcess:
    """The experiment's run, with its outputs in the workspace (and main's params.yaml, as the other tests expect)."""
    result = experiments[name]
    assert result.returncode == 0, result.stdout + result.stderr
    apply = dvc(repo, "exp", "apply", name)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    run(repo, "git", "checkout", "params.yaml")
    return result


def test_metrics_diff_between_two_experiments_prints_changed_keys(repo, experiments):
    assert all(result.returncode == 0 for result in experiments.values())
    diff = dvc(repo, "metrics", "diff", "attention", "two-processes", "--md")
    assert diff.returncode == 0, diff.stderr
    changed = [line.split("|")[2].strip() for line in diff.stdout.splitlines() if "metrics/eval.json" in line]
    assert "model.recall@10" in changed and "model.auc" in changed
    assert "popularity.recall@10" not in changed and "als.recall@10" not in changed  # baselines do not move


def test_compare_says_whether_a_difference_is_beyond_noise(repo, experiments):
    gamerec = str(Path(sys.executable).parent / "gamerec")
    result = run(repo, gamerec, "compare", "attention", "two-processes")  # two experiments, read from DVC's cache
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "A = attention, B = two-processes" in lines[0] and lines[1].startswith("recall@10") and lines[2].startswith("ndcg@10")
    rows = json.loads(run(repo, gamerec, "compare", "workspace:popularity", "workspace:model", "--json").stdout)
    scores = json.loads((repo / "metrics/eval.json").read_text())
    for row in rows:  # the ranks file gives back the metrics evaluate wrote
        assert row["a"] == pytest.approx(scores["popularity"][row["metric"]], abs=1e-6)
        assert row["b"] == pytest.approx(scores["model"][row["metric"]], abs=1e-6)
        assert row["difference"] == pytest.approx(row["b"] - row["a"])
        assert row["interval"][0] <= row["difference"] <= row["interval"][1]
        assert row["beyond_noise"] == (not row["interval"][0] <= 0 <= row["interval"][1])
    same = json.loads(run(repo, gamerec, "compare", "workspace:als", "workspace:als", "--json").stdout)
    assert all(row["difference"] == 0 and not row["beyond_noise"] for row in same)
    bad = run(repo, gamerec, "compare", "workspace:nobody", "workspace")
    assert bad.returncode == 1 and bad.stderr.startswith("error: scorer 'nobody' is not in the ranks")


def test_tune_queues_a_grid_ranks_it_on_validation_and_applies_the_best(repo):
    gamerec = str(Path(sys.executable).parent / "gamerec")
    result = run(repo, gamerec, "tune", "--grid", "model.attention_dropout=0.2", "--grid", "train.lr=0.002,0.05",
                 "--set", "train.epochs=1", "--name", "tiny", "--jobs", "2", "--budget-minutes", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    ranked = [line.split() for line in result.stdout.splitlines() if line.startswith("tiny-")]
    assert sorted(row[0] for row in ranked) == ["tiny-1", "tiny-2"]
    recalls = [float(row[2]) for row in ranked]
    assert recalls == sorted(recalls, reverse=True)
    best_lr = next(word for word in ranked[0] if word.startswith("train.lr=")).rstrip(",").split("=")[1]
    applied = yaml.safe_load((repo / "params.yaml").read_text())
    assert str(applied["train"]["lr"]) == best_lr and applied["train"]["epochs"] == 1
    assert "evaluate:" in dvc(repo, "status").stdout  # the search never evaluated on test
    run(repo, "git", "checkout", "params.yaml")


def test_the_attention_tower_trains_evaluates_and_serves_a_list_of_games(repo, experiments):
    applied(repo, experiments, "attention")
    assert json.loads((repo / "metrics/eval.json").read_text())["model"]["recall@10"] > 0
    assert json.loads((repo / "models/serving/serving.json").read_text())["user_tower"] == "numpy_attention"  # served without PyTorch
    with gzip.open(repo / "data/raw/synthetic/Video_Games_5.json.gz", "rt") as f:
        asins = list(dict.fromkeys(json.loads(line)["asin"] for line in f))[:3]  # three distinct games
    answer = run(repo, str(Path(sys.executable).parent / "gamerec"), "recommend", "--items", ",".join(asins), "--json")
    assert answer.returncode == 0, answer.stderr
    assert len(json.loads(answer.stdout)["items"]) == 10


def test_train_processes_param_makes_the_train_stage_start_torchrun(repo, experiments):
    result = applied(repo, experiments, "two-processes")
    assert "2 processes" in result.stdout  # rank 0's summary line
    import torch

    from gamerec.model import TwoTower

    TwoTower.from_checkpoint(torch.load(repo / "models/model.pt", weights_only=True))
    assert json.loads((repo / "metrics/eval.json").read_text())["model"]["recall@10"] > 0


def test_plots_diff_renders_the_declared_plots_a_colour_per_scorer(repo, experiments):
    result = dvc(repo, "plots", "diff", "attention", "two-processes", "--json")
    assert result.returncode == 0 and "errors" not in json.loads(result.stdout), result.stdout[:500] + result.stderr
    plots = json.loads(result.stdout)["data"]
    titles = ["Training loss per epoch", "Validation recall@10 per epoch",
              "ROC on the fixed test pairs, the model and both baselines",
              "recall@K over the full catalogue, the model and both baselines"]
    assert list(plots) == titles
    recall = plots[titles[3]][0]["content"]
    assert recall["encoding"]["color"]["field"] == "field" and recall["encoding"]["strokeDash"]["field"] == "rev"
    lines = {(point["rev"], point["field"]) for point in recall["data"]["values"]}
    assert lines == {(rev, scorer) for rev in EXPERIMENTS for scorer in ("model", "als", "popularity")}
    loss = plots[titles[0]][0]["content"]
    assert '"title": "epoch"' in json.dumps(loss) and '"title": "step"' not in json.dumps(loss)


def workflow(name: str) -> tuple[dict, list[dict], str]:
    """A workflow file, its steps and its shell commands."""
    parsed = yaml.safe_load((REPO / ".github/workflows" / name).read_text())
    steps = [step for job in parsed["jobs"].values() for step in job["steps"]]
    return parsed, steps, "\n".join(step.get("run", "") for step in steps)


def test_pull_request_workflow_reproduces_it_and_updates_one_comment_with_the_report():
    parsed, steps, commands = workflow("pr-report.yml")
    assert parsed[True] == "pull_request"  # YAML reads the bare key `on` as True
    assert commands.count("dvc repro") == 1  # the pull request only: the base's outputs are committed
    assert "pip install -e ." in commands
    cached = {step["with"]["path"] for step in steps if step.get("uses", "").startswith("actions/cache")}
    assert cached == {"~/.cache/pip", ".dvc/cache"}
    assert 'gamerec report pr --base "origin/${{ github.base_ref }}" --out report' in commands
    assert "cml comment update --target=pr --publish report/pr.md" in commands  # one comment, updated
    assert any(step.get("uses", "").startswith("iterative/setup-cml") for step in steps)


def test_tests_workflow_runs_ci_run_on_pull_requests_and_main():
    parsed, steps, commands = workflow("tests.yml")
    assert set(parsed[True]) == {"pull_request", "push"} and parsed[True]["push"]["branches"] == ["main"]
    assert commands.strip().splitlines()[-1] == ".ci/run"
    ci = (REPO / ".ci/run").read_text()
    assert 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && python -m pytest' in ci


def test_metrics_show_lists_only_what_users_compare(repo):
    result = dvc(repo, "metrics", "show", "--json")
    assert result.returncode == 0, result.stderr
    flat = json.dumps(json.loads(result.stdout))
    assert "metrics/eval.json" in flat and "metrics/train.json" in flat and "reports/" not in flat
    data = dvc(repo, "metrics", "show", "reports/data.json")  # a report, on demand
    assert data.returncode == 0 and "coverage.price" in data.stdout


def test_missing_raw_dir_stops_dvc_with_one_line(repo):
    edit_params(repo, prepare={"raw_dir": "data/raw/nope"})
    try:
        result = dvc(repo, "repro", "prepare")
    finally:
        run(repo, "git", "checkout", "params.yaml")
    # DVC checks dependencies before running the stage, so this line is DVC's own
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and "data/raw/nope" in lines[0] and "No such file" in lines[0], lines


@pytest.mark.skipif(not (REAL / "gift_cards_2018").exists(), reason="no ../shared/data/real/gift_cards_2018")
def test_real_gift_cards_give_nonzero_coverage(tmp_path):
    repo = make_repo(tmp_path)
    shutil.copytree(REAL / "gift_cards_2018", repo / "data/raw/gift_cards")
    result = dvc(repo, "exp", "run", "-S", "prepare.raw_dir=data/raw/gift_cards")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((repo / "reports/data.json").read_text())
    assert data["raw"]["format"] == "amazon2018"
    assert data["users"] > 100 and data["items"] > 50
    assert all(data["coverage"][k] > 0 for k in ("price", "brand", "description", "also_view"))
    # the exported model answers for a real reviewer, with real titles, without what they reviewed
    with gzip.open(REAL / "gift_cards_2018/Gift_Cards_5.json.gz", "rt") as f:
        reviews = [json.loads(line) for line in f]
    user = reviews[0]["reviewerID"]
    result = run(repo, str(Path(sys.executable).parent / "gamerec"), "recommend", "--user", user, "-k", "5", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["source"] == "model" and len(answer["items"]) == 5
    assert not {item["asin"] for item in answer["items"]} & {r["asin"] for r in reviews if r["reviewerID"] == user}
    assert all(item["title"] for item in answer["items"]) and any(item["price"] for item in answer["items"])


# Stage scripts run directly, as `dvc repro` runs them, in a scratch folder of our own.


def stage(tmp_path: Path, name: str, **prepare: object) -> subprocess.CompletedProcess:
    params = {"paths": repo_params()["paths"], "prepare": {"min_interactions": 1, **prepare}, "synthetic": TINY}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return run(tmp_path, sys.executable, str(REPO / "stages" / f"{name}.py"))


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture()
def synthetic_raw(tmp_path) -> Path:
    assert stage(tmp_path, "synthesize").returncode == 0
    return tmp_path / "data/raw/synthetic"


def corrupt(path: Path, lines: list[bytes], at: int) -> None:
    with gzip.open(path, "rb") as f:
        records = f.read().splitlines(keepends=True)
    records[at:at] = lines
    with gzip.open(path, "wb") as f:
        f.writelines(records)


def test_corrupt_line_is_counted_below_threshold(tmp_path, synthetic_raw):
    corrupt(synthetic_raw / "Video_Games_5.json.gz", [b'{"reviewerID": "A1", "asin": \n'], at=3)
    assert stage(tmp_path, "prepare", raw_dir="data/raw/synthetic").returncode == 0
    files = json.loads((tmp_path / "reports/data.json").read_text())["raw"]["files"]
    assert files["Video_Games_5.json.gz"]["bad_lines"] == 1
    assert files["Video_Games_5.json.gz"]["first_bad_line"] == 4


def test_corrupt_lines_past_threshold_stop_the_stage(tmp_path, synthetic_raw):
    corrupt(synthetic_raw / "Video_Games_5.json.gz", [b"not json\n", b"\xff\xfe\n"], at=0)
    line = one_line_error(stage(tmp_path, "prepare", raw_dir="data/raw/synthetic", max_bad_fraction=0.0))
    assert "Video_Games_5.json.gz" in line and "prepare.max_bad_fraction" in line
    assert not (tmp_path / "data/prepared").exists() and not (tmp_path / "reports").exists()


def test_missing_folder_and_unknown_format_are_one_line_errors(tmp_path):
    line = one_line_error(stage(tmp_path, "prepare", raw_dir="data/raw/absent"))
    assert "data/raw/absent" in line
    odd = tmp_path / "data/raw/odd"
    odd.mkdir(parents=True)
    (odd / "games.parquet").write_bytes(b"PAR1")
    line = one_line_error(stage(tmp_path, "prepare", raw_dir="data/raw/odd"))
    assert "games.parquet" in line and "2014" in line and "2018" in line and "2023" in line


def test_bad_param_is_a_one_line_error(tmp_path):
    line = one_line_error(stage(tmp_path, "prepare", split="random"))
    assert "prepare.split = 'random'" in line and "leave_last_out" in line
