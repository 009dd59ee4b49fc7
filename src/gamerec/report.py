"""Reports from the pipeline's outputs: the samplers side by side, and a pull request against its base.

`gamerec report samplers` waits for the experiment queue, then takes every finished
experiment of HEAD (or the ones named): a markdown table of each experiment's model and of
both baselines on the test split, with validation recall, and two PNG plots: recall@K of
each experiment's model with the baselines as lines of their own, and the training curves
per epoch. `gamerec report pr --base REV` compares the workspace (a reproduced pull
request) with REV: DVC's metrics and params diffs as markdown tables and the same two
plots, the base beside the pull request. CI posts it as the pull request's comment.

Every file is read through `dvc.api.DVCFileSystem` at its revision (a commit, an
experiment, or the workspace): the metrics, plots and training curves are committed with
`cache: false`, so no DVC remote is needed.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from gamerec import config, experiments
from gamerec.errors import GamerecError
from gamerec.stage import paths

BASELINES = {"als": "ALS baseline", "popularity": "popularity baseline"}  # eval.json's groups beside `model`
BASELINE_STYLE = {"als": {"color": "black", "linestyle": "--"}, "popularity": {"color": "grey", "linestyle": ":"}}
SHOWN_METRICS = ("recall@", "ndcg@", "mrr", "auc", "coverage@")  # the table's test metrics, in this order
PR_MARKER = "<!-- gamerec report pr -->"  # the comment's first line, by which CI finds it to update it
POLL_SECONDS = 5.0
LOG_SPREAD = 3.0  # a loss panel whose largest value is this many times its smallest is drawn on a log scale
STALLED_POLLS = 6  # tasks queued with no worker for this many polls in a row: nobody is going to run them


@dataclass
class Run:
    """What a report shows of one revision's outputs."""

    label: str  # the legend's name for it
    rev: str  # an experiment, a commit, or "workspace"
    params: dict
    metrics: dict  # metrics/eval.json: a group per scorer (model, als, popularity)
    train: dict  # metrics/train.json: validation recall and the best epoch
    recall: pd.DataFrame  # plots/recall_at_k.csv: k and a column per scorer
    curves: dict[str, pd.DataFrame]  # DVCLive's metric name -> its (step, value) rows; the step is the epoch


def read_run(rev: str, label: str, where: config.Paths) -> Run:
    """The outputs of revision `rev` ("workspace": the files here), from git or DVC's cache."""
    from dvc.api import DVCFileSystem

    try:
        fs = DVCFileSystem(".", rev=None if rev == "workspace" else rev)
        live = f"{where.live}/plots/metrics"
        tsvs = [path for path in (fs.find(live) if fs.exists(live) else []) if path.endswith(".tsv")]
        return Run(label=label, rev=rev, params=yaml.safe_load(fs.read_text(str(config.PARAMS_FILE))),
                   metrics=json.loads(fs.read_text(where.eval_metrics)),
                   train=json.loads(fs.read_text(where.train_metrics)),
                   recall=_csv(fs.read_text(f"{where.plots}/recall_at_k.csv")),
                   curves={Path(path).stem: _csv(fs.read_text(path), sep="\t") for path in sorted(tsvs)})
    except Exception as exc:  # DVC raises its own kinds for a bad revision or a missing file
        raise GamerecError(f"the pipeline's outputs at {rev} cannot be read ({type(exc).__name__}: {exc}); "
                           "reproduce it there first") from None


def _csv(text: str, sep: str = ",") -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), sep=sep)


# The samplers


def samplers(out: Path, names: list[str] | None = None) -> Path:
    """Wait for the queue, then write `samplers.md` and its two plots for HEAD's experiments (or `names`)."""
    from gamerec.samplers import SAMPLERS

    wait_for_queue()
    finished, failed = _experiments(names)
    where = paths()
    runs = [read_run(name, name, where) for name in finished]
    for run in runs:
        sampler, loss = run.params.get("sampler"), run.params.get("train", {}).get("loss", "auto")
        if loss == "auto" and sampler in SAMPLERS:
            loss = SAMPLERS[sampler].loss  # what `auto` trained with: the sampler's own loss
        run.label = f"{sampler} ({loss})"
    runs = _unique_labels(sorted(runs, key=lambda run: -_headline(run.metrics["model"])))
    out.mkdir(parents=True, exist_ok=True)
    plot_recall(runs, out / "samplers-recall.png", "recall@K on the test split: each sampler and both baselines")
    plot_training(runs, out / "samplers-training.png")
    lines = [f"# {len(runs)} experiments compared", "",
             "Each experiment's model and both baselines on the test split (the same test users, ranked over "
             "the full catalogue), and the validation recall of the epoch each model kept.", "",
             *metrics_table(runs), "", "![recall@K of each sampler and both baselines](samplers-recall.png)", "",
             "![training loss and validation recall per epoch](samplers-training.png)"]
    if failed:
        lines[2:2] = [f"Left out, failed: {', '.join(failed)} (`dvc queue logs NAME` says why).", ""]
    (out / "samplers.md").write_text("\n".join(lines) + "\n")
    return out / "samplers.md"


def wait_for_queue(poll: float = POLL_SECONDS) -> None:
    """Return once no queued experiment is waiting or running; an error if queued ones have no worker."""
    stalled, told = 0, False
    while True:
        tasks, workers = experiments.queue_status()
        running = [name for name, status in tasks if status == "Running"]
        queued = [name for name, status in tasks if status == "Queued"]
        if not running and not queued:
            return
        stalled = stalled + 1 if queued and not running and not workers else 0
        if stalled >= STALLED_POLLS:
            raise GamerecError(f"{len(queued)} experiments are queued and no worker runs them: `dvc queue start`")
        if not told:
            print(f"report: waiting for {len(running) + len(queued)} experiments (`dvc queue status`)",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(poll)


def _experiments(names: list[str] | None) -> tuple[list[str], list[str]]:
    """HEAD's finished and failed experiments (of `names`, when given); an error if none, or a named one, finished."""
    finished, failed = [], []
    for rev in experiments.experiments(experiments.show()):
        if names is None or rev["name"] in names:
            (finished if experiments.finished(rev) else failed).append(rev["name"])
    missing = sorted(set(names or []) - set(finished))
    if missing:
        raise GamerecError(f"no finished experiment named {', '.join(missing)}")
    if not finished:
        raise GamerecError("no finished experiment of HEAD: queue the samplers first "
                           "(`dvc exp run --queue -S sampler=...`, `dvc queue start`)")
    return finished, failed


def _headline(metrics: dict) -> float:
    """The first shown metric's value (recall at the first cutoff): the order of the table's rows."""
    return metrics[shown_metrics(metrics)[0]]


def _unique_labels(runs: list[Run]) -> list[Run]:
    """Runs whose labels repeat get their revision added, so that every legend entry names one run."""
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} [{run.rev}]"
    return runs


def shown_metrics(metrics: dict) -> list[str]:
    """The test metrics a table shows, grouped as SHOWN_METRICS orders them, cutoffs ascending."""
    order = lambda key: (int(key.split("@")[1]) if "@" in key else 0, key)
    return [key for prefix in SHOWN_METRICS for key in sorted(metrics, key=order) if key.startswith(prefix)]


def metrics_table(runs: list[Run]) -> list[str]:
    """Markdown lines: a row per run's model, then a row per baseline (one per run where they differ)."""
    keys = shown_metrics(runs[0].metrics["model"])
    validation = [key for key in runs[0].train if key != "best_epoch"]
    head = ["scorer", "experiment", *keys, *validation, "best epoch"]
    rows = [[f"**{run.label}**", run.rev, *_cells(run.metrics["model"], keys),
             *_cells(run.train, validation), str(run.train.get("best_epoch", ""))] for run in runs]
    for scorer, title in BASELINES.items():
        for suffix, group in distinct(runs, lambda run: run.metrics.get(scorer)):
            rows.append([title + suffix, "", *_cells(group, keys), *([""] * len(validation)), ""])
    return markdown_table(head, rows)


def _cells(values: dict, keys: list[str]) -> list[str]:
    return [f"{values[key]:.4f}" if key in values else "" for key in keys]


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub markdown table's lines."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(row) + " |" for row in rows)]


def distinct(runs: list[Run], value: Callable[[Run], object]) -> list[tuple[str, object]]:
    """A baseline's value once when every run measured the same, else once per run: (label suffix, value).

    Runs that are missing it (ALS disabled) are left out."""
    found = [(run, value(run)) for run in runs]
    found = [(run, v) for run, v in found if v is not None and not _blank(v)]
    if not found:
        return []
    first = found[0][1]
    same = all(_equal(v, first) for _, v in found)
    return [("", first)] if same else [(f" [{run.label}]", v) for run, v in found]


def _blank(value) -> bool:
    return isinstance(value, pd.Series) and value.isna().all()


def _equal(a, b) -> bool:
    return a.equals(b) if isinstance(a, pd.Series) else a == b


# The plots


def _pyplot():
    """matplotlib's pyplot on the file-only backend (no display is needed, or looked for)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_recall(runs: list[Run], path: Path, title: str) -> None:
    """recall@K of each run's model, colour by run; each baseline a black or grey line of its own."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, run in enumerate(runs):
        ax.plot(run.recall["k"], run.recall["model"], color=f"C{i}", linewidth=2, label=run.label)
    for scorer, title_ in BASELINES.items():
        for suffix, curve in distinct(runs, lambda run: run.recall.get(scorer)):
            ax.plot(runs[0].recall["k"], curve, linewidth=1.5, label=title_ + suffix, **BASELINE_STYLE[scorer])
    ax.set(title=title, xlabel="K (the length of each user's list)", ylabel="recall@K")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_training(runs: list[Run], path: Path) -> None:
    """A panel per DVCLive metric (the loss, validation recall), a line per run over the epochs."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    names = sorted({name for run in runs for name in run.curves}, key=lambda name: (name != "loss", name))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(6 * max(len(names), 1), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        curves = [(i, run, run.curves[name]) for i, run in enumerate(runs) if name in run.curves]
        for i, run, frame in curves:
            ax.plot(frame["step"], frame[name], color=f"C{i}", marker="o", markersize=3, label=run.label)
        values = pd.concat([frame[name] for _, _, frame in curves])
        log = name == "loss" and values.min() > 0 and values.max() / values.min() > LOG_SPREAD
        if log:
            ax.set_yscale("log")  # each run's own loss: BCE and softmax losses can lie an order of magnitude apart
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.4, not 4 x 10^-1
        ax.set(title=_curve_title(name, log), xlabel="epoch", ylabel=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = {}  # label -> line: one legend below the panels, every run once
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 4))
    _save(fig, path, bottom=0.08 * (1 + (len(handles) - 1) // 4))


def _curve_title(name: str, log: bool) -> str:
    if name == "loss":
        return "Training loss per epoch (each run's own loss" + (", log scale)" if log else ")")
    return f"Validation {name.removeprefix('val_')} per epoch" if name.startswith("val_") else f"{name} per epoch"


def _save(fig, path: Path, bottom: float = 0.0) -> None:
    """Write the figure as a PNG, `bottom` of its height left to a legend below the panels."""
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: the same plot, the same bytes
    _pyplot().close(fig)


# The pull request


def pull_request(base: str, out: Path) -> Path:
    """Write `pr.md` and its two plots: the workspace (the reproduced pull request) against revision `base`."""
    where = paths()
    runs = [read_run(base, base, where), read_run("workspace", "pull request", where)]
    out.mkdir(parents=True, exist_ok=True)
    plot_recall(runs, out / "pr-recall.png", f"recall@K on the test split: the pull request and {base}")
    plot_training(runs, out / "pr-training.png")
    metrics, params = (diff_table(experiments.run_dvc(kind, "diff", base, "--md").stdout) for kind in ("metrics", "params"))
    lines = [PR_MARKER, f"## This pull request against `{base}`", "",
             "### Metrics", "", "The model and both baselines on the test split (metrics/eval.json), and "
             "validation (metrics/train.json); only what changed.", "", metrics or "No metric changed.", "",
             "### Params", "", params or "No param changed.", "",
             "### Plots", "", f"![recall@K: the pull request and {base}](pr-recall.png)", "",
             f"![training loss and validation recall per epoch: the pull request and {base}](pr-training.png)"]
    (out / "pr.md").write_text("\n".join(lines) + "\n")
    return out / "pr.md"


def diff_table(markdown: str) -> str:
    """A `dvc metrics/params diff --md` table, or "" when it has no rows (DVC prints the header alone)."""
    lines = [line for line in markdown.strip().splitlines() if line.strip()]
    return "\n".join(lines) if len(lines) > 2 else ""
