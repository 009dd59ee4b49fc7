"""Stage `evaluate`: the fixed test protocol for the trained model and its baselines (params `evaluate`)."""

from pathlib import Path

from gamerec import baselines, config, profile
from gamerec.devices import resolve_device
from gamerec.evaluation import (Report, evaluate, feature_ablation, load_eval_data, model_scorer, validation_recall,
                                write_ranks)
from gamerec.io import atomic_path, write_json
from gamerec.model import TwoTower, load_checkpoint
from gamerec.prepared import Prepared
from gamerec.stage import paths, run_stage


# The plots' columns, in this order. dvc.yaml names each; a scorer that did not run (ALS
# disabled) gets a blank column, which DVC draws as no line instead of failing the plot.
PLOTTED = ("model", "als", "popularity")


def _rounded(metrics: dict) -> dict:
    # 6 decimals: enough to compare runs, few enough to keep float noise out of diffs
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def write_plots(reports: dict[str, Report], out_dir: Path) -> None:
    """ROC of the test pairs and recall@K for K = 1..max: a column per scorer of PLOTTED."""
    out_dir.mkdir(parents=True)
    fpr = reports["model"].roc[0]  # one fpr grid for every scorer
    roc = {name: reports[name].roc[1] if name in reports else None for name in PLOTTED}
    _write_columns(out_dir / "roc.csv", "fpr", [f"{f:.4f}" for f in fpr], roc)
    curves = {name: reports[name].recall_curve if name in reports else None for name in PLOTTED}
    _write_columns(out_dir / "recall_at_k.csv", "k", range(1, len(curves["model"]) + 1), curves)


def _write_columns(path: Path, x_name: str, xs, columns: dict[str, list[float] | None]) -> None:
    """A CSV of one x column and a column per scorer, 6 decimals (blank for a scorer without values)."""
    cell = lambda column, i: "" if column is None else f"{column[i]:.6f}"
    rows = [",".join([str(x), *(cell(column, i) for column in columns.values())]) for i, x in enumerate(xs)]
    path.write_text(",".join([x_name, *columns]) + "\n" + "\n".join(rows) + "\n")


def main() -> None:
    params = config.load(config.EvaluateParams, "evaluate")
    where = paths()
    k = params.k[0]  # the headline cutoff: ALS tuning, ablation and the printed summary use it
    device = resolve_device(params.device, "evaluate.device")
    model = TwoTower.from_checkpoint(load_checkpoint(where.model)).to(device).eval()
    data = load_eval_data(Prepared(where.prepared), params)
    reports = {"model": evaluate(*model_scorer(model), data, params, "the model", device)}
    users, items, dim = reports["model"].users_evaluated, model.config.num_items, model.config.arch.dim
    profile.record("evaluate", users=users, items=items, dim=dim, ranking_seconds=reports["model"].ranking_seconds,
                   flops=2 * users * items * dim)
    reports["popularity"] = evaluate(*baselines.popularity(data.popularity), data, params, "popularity", device)
    report = {"users_evaluated": users, "catalogue_items": data.catalogue_items}
    if params.als.enabled:
        scorer, chosen = baselines.tune_als(
            data.train_users, data.train_items, data.num_users, items, params.als,
            lambda s: validation_recall(s, data, k, params.memory_mb, params.precision),
        )
        reports["als"] = evaluate(*scorer, data, params, "ALS", device)
        report["als"] = _rounded({"grid": params.als.grid, **chosen})
    report["intervals"] = {name: {metric: [round(lo, 6), round(hi, 6)] for metric, (lo, hi) in r.intervals.items()}
                           for name, r in reports.items()}
    with atomic_path(where.ranks) as tmp:
        write_ranks(tmp, data.test.holdout, {name: r.ranks for name, r in reports.items()})
    write_json(where.ablation_report, feature_ablation(model, data, k, params.memory_mb, params.precision,
                                                       params.ablation_users, params.bootstrap.samples, params.bootstrap.seed))
    with atomic_path(where.plots) as tmp:
        write_plots(reports, tmp)
    write_json(where.eval_report, report)
    write_json(where.eval_metrics, {name: _rounded(r.metrics) for name, r in reports.items()})
    scores = "; ".join(f"{name} recall@{k} {r.metrics[f'recall@{k}']:.4f} ndcg@{k} {r.metrics[f'ndcg@{k}']:.4f}"
                       for name, r in reports.items())
    print(f"evaluate: {users} test users, {data.catalogue_items} items; {scores}")


if __name__ == "__main__":
    run_stage(main)
