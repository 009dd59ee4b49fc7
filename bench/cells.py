"""Every (negative set, loss) cell, tuned on validation and tested once: the table of which negatives help.

    python bench/cells.py --data synthetic              # the default data (about 75 minutes on 2 cores)
    python bench/cells.py --data real --raw data/raw/video_games_2014   # a folder DVC tracks (dvc add)
    python bench/cells.py --data real --raw ... --prefix real-pool --set model.user_tower=pool ...  # other fixed params
    python bench/cells.py --data real --raw ... --best cells-real.json   # chosen points known: test the cells only

1. For every cell, a grid of `model.temperature` x `train.lr` is queued as DVC experiments
   of the `train` stage only (validation recall; test is never computed), and the queue runs
   with two workers (the stages share the cores).
2. Each cell's best point on validation recall@10 is run through the whole pipeline once
   (`dvc exp run -n <data>-<cell>`): the same `evaluate`, the same protocol, for every cell.
3. The table: test recall@10 and ndcg@10 with their 95% bootstrap intervals, auc,
   auc_also_view, coverage@10, the mean popularity percentile of the top 10, the chosen
   temperature and learning rate, and each cell's difference from in_batch x batch_softmax
   (the default) with a paired bootstrap interval (`gamerec compare`). Markdown on stdout.

Run it in a clone of the repository whose workspace is committed: every run is an experiment.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from gamerec import compare, config, experiments, tuning  # noqa: E402

CELLS = [  # (negative set, loss); in_batch's own negatives are the batch: its sampled softmax is batch_softmax
    ("in_batch", "batch_softmax"), ("in_batch", "bce"),
    ("out_batch", "bce"), ("out_batch", "sampled_softmax"), ("out_batch", "batch_softmax"),
    ("also_view", "bce"), ("also_view", "sampled_softmax"), ("also_view", "batch_softmax"),
    ("mined", "bce"), ("mined", "sampled_softmax"), ("mined", "batch_softmax"),
    ("in_batch", "exact_softmax"),  # every catalogue item a negative: the reference
]
# around the default's point (temperature 0.1, tables at 0.001: the attention tower's grids, docs/user_tower.md);
# the pool tower's grid was temperature 0.1-0.2 x lr 0.005-0.02
GRID = {"model.temperature": [0.1, 0.2], "train.lr": [0.001, 0.003]}
METRICS = ["recall@10", "ndcg@10", "auc", "auc_also_view", "coverage@10", "popularity_percentile@10"]


def cell_name(prefix: str, sampler: str, loss: str) -> str:
    return f"{prefix}-{sampler}-{loss}".replace("_", "")


def tested_name(prefix: str, sampler: str, loss: str) -> str:
    """The experiment that runs a cell's chosen point through the whole pipeline (`tuning.queue` numbers from 1)."""
    return cell_name(prefix, sampler, loss) + "-1"


def data_params(data: str, raw: str | None) -> dict[str, str]:
    return {} if data == "synthetic" else {"prepare.raw_dir": raw, "prepare.min_interactions": "1"}


def tune_cells(prefix: str, fixed: dict[str, str], grid: dict[str, list], jobs: int, budget: float) -> dict[str, dict]:
    """Queue every cell's grid, run it, and return each cell's best point (its params) on validation."""
    names = {}
    for sampler, loss in CELLS:
        sets = {**fixed, "sampler": sampler, "train.loss": loss}
        names[(sampler, loss)] = tuning.queue(cell_name(prefix, sampler, loss) + "-grid", tuning.points(grid), sets,
                                              "train")
    print(f"cells: {sum(map(len, names.values()))} grid experiments queued", file=sys.stderr, flush=True)
    tuning.run_queue(jobs, budget)
    best = {}
    for cell, cell_names in names.items():
        rows = tuning.results(cell_names)
        if rows:
            params = rows[0]["params"]
            best[cell] = {"model.temperature": params["model"]["temperature"], "train.lr": params["train"]["lr"],
                          "val_recall@10": rows[0]["val_recall@10"]}
    return best


def test_cells(prefix: str, fixed: dict[str, str], best: dict[str, dict], jobs: int, budget: float) -> None:
    """Run each cell's chosen point through the whole pipeline (evaluate included), as named experiments.

    A cell whose experiment exists already (an earlier, interrupted run) is not run again.
    """
    done = {rev.get("name") for rev in experiments.revisions(experiments.show())}
    todo = {cell: point for cell, point in best.items() if tested_name(prefix, *cell) not in done}
    for (sampler, loss), point in todo.items():
        sets = {**fixed, "sampler": sampler, "train.loss": loss, "model.temperature": point["model.temperature"],
                "train.lr": point["train.lr"]}
        tuning.queue(cell_name(prefix, sampler, loss), [{}], sets, None)  # every stage: export skips evaluate
    if todo:
        tuning.run_queue(jobs, budget)


def table(prefix: str, best: dict[str, dict], where: config.Paths) -> str:
    """The markdown table of the tested cells, then the baselines, as the default cell's run measured them."""
    import dvc.api

    runs = {rev["name"]: rev for rev in experiments.revisions(experiments.show())}
    default = tested_name(prefix, "in_batch", "batch_softmax")
    head = ["negatives", "loss", *METRICS, "temperature", "lr", "val recall@10", "recall@10 - default [95%]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, scorer: str, label: list[str], point: dict) -> str:
        metrics = runs[name]["data"]["metrics"]["metrics/eval.json"]["data"][scorer]
        intervals = json.loads(dvc.api.read(where.eval_report, rev=name))["intervals"][scorer]
        shown = [f"{metrics[m]:.4f}" + (f" [{intervals[m][0]:.4f}, {intervals[m][1]:.4f}]" if m in intervals else "")
                 for m in METRICS]
        diff = "-"
        if (name, scorer) != (default, "model"):
            d = compare.compare(default, f"{name}:{scorer}", where.ranks)[0]
            diff = f"{d['difference']:+.4f} [{d['interval'][0]:+.4f}, {d['interval'][1]:+.4f}]"
        val = runs[name]["data"]["metrics"].get("metrics/train.json", {}).get("data", {}).get("val_recall@10")
        extra = [str(point.get("model.temperature", "-")), str(point.get("train.lr", "-")),
                 f"{val:.4f}" if val is not None and scorer == "model" else "-"]
        return "| " + " | ".join([*label, *shown, *extra, diff]) + " |"

    for (sampler, loss), point in best.items():
        if tested_name(prefix, sampler, loss) in runs:
            lines.append(row(tested_name(prefix, sampler, loss), "model", [sampler, loss], point))
    for scorer in ("als", "popularity"):
        lines.append(row(default, scorer, [f"{scorer} baseline", "-"], {}))
    return "\n".join(lines)


def fixed_param(text: str) -> tuple[str, str]:
    """`KEY=VALUE` from --set, or a one-line error."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"cells: --set {text!r}: expected KEY=VALUE, as dvc exp run -S")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["synthetic", "real"], required=True)
    parser.add_argument("--raw", help="the real data's raw folder (tracked by DVC), for --data real")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--budget-minutes", type=float, default=600)
    parser.add_argument("--best", type=Path, help="a JSON of chosen points (as this script writes): skip the grid")
    parser.add_argument("--prefix", help="the experiments' names begin with it (default: --data)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param fixed for every run, as `dvc exp run -S` (repeatable)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=A,B",
                        help=f"replace a key's values in the grid (default {GRID})")
    args = parser.parse_args()
    prefix = args.prefix or args.data
    fixed = {**data_params(args.data, args.raw), **dict(fixed_param(s) for s in args.set)}
    grid = {**GRID, **{key: values.split(",") for key, _, values in (g.partition("=") for g in args.grid)}}
    if args.best:
        best = {tuple(k.split("|")): v for k, v in json.loads(args.best.read_text()).items()}
    else:
        best = tune_cells(prefix, fixed, grid, args.jobs, args.budget_minutes)
        Path(f"cells-{prefix}.json").write_text(json.dumps({"|".join(k): v for k, v in best.items()}, indent=2))
    test_cells(prefix, fixed, best, args.jobs, args.budget_minutes)
    print(table(prefix, best, config.load(config.Paths, "paths")))


if __name__ == "__main__":
    main()
