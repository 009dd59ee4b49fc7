"""Stage `evaluate`: the fixed test protocol for the trained model and its baselines (params `evaluate`)."""

import sys
from pathlib import Path

from gamerec import baselines, config, profile
from gamerec.evaluation import Report, evaluate, feature_ablation, load_eval_data, model_scorer, validation_recall
from gamerec.io import atomic_path, write_json
from gamerec.model import TwoTower, load_checkpoint
from gamerec.prepared import Prepared
from gamerec.stage import paths, run_stage


def _rounded(metrics: dict) -> dict:
    # 6 decimals: enough to compare runs, few enough to keep float noise out of diffs
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def write_plots(model: Report, popularity: Report, out_dir: Path) -> None:
    """ROC of the test pairs and recall@K for K = 1..max, model beside the baseline."""
    out_dir.mkdir(parents=True)
    fpr, tpr = model.roc
    _, pop_tpr = popularity.roc
    rows = [f"{f:.4f},{t:.6f},{p:.6f}" for f, t, p in zip(fpr, tpr, pop_tpr)]
    (out_dir / "roc.csv").write_text("fpr,model,popularity\n" + "\n".join(rows) + "\n")
    rows = [f"{k},{m:.6f},{p:.6f}" for k, (m, p) in enumerate(zip(model.recall_curve, popularity.recall_curve), 1)]
    (out_dir / "recall_at_k.csv").write_text("k,model,popularity\n" + "\n".join(rows) + "\n")


def main() -> None:
    params = config.load(config.EvaluateParams, "evaluate")
    where = paths()
    k = params.k[0]  # the headline cutoff: ALS tuning, ablation and the printed summary use it
    model = TwoTower.from_checkpoint(load_checkpoint(where.model)).eval()
    data = load_eval_data(Prepared(where.prepared), params)
    report = evaluate(*model_scorer(model), data, params)
    users, items = len(data.test.holdout.users), model.config.num_items
    profile.record("evaluate", users=users, items=items, dim=model.config.arch.dim,
                   ranking_seconds=report.ranking_seconds, flops=2 * users * items * model.config.arch.dim)
    baseline = evaluate(*baselines.popularity(data.popularity), data, params)
    result = {**_rounded(report.metrics), "baseline": {"popularity": _rounded(baseline.metrics)}}
    if params.als.enabled and baselines.als_available():
        scorer, chosen = baselines.tune_als(
            data.train_users, data.train_items, data.num_users, model.config.num_items, params.als,
            lambda s: validation_recall(s, data, k, params.memory_mb),
        )
        result["baseline"]["als"] = {**_rounded(evaluate(*scorer, data, params).metrics), **_rounded(chosen)}
    elif params.als.enabled:
        print('evaluate: the ALS baseline needs `implicit` (pip install -e ".[als]"); skipped', file=sys.stderr)
    write_json(where.ablation_report, {f"val_recall@{k}": _rounded(feature_ablation(model, data, k, params.memory_mb))})
    with atomic_path(where.plots) as tmp:
        write_plots(report, baseline, tmp)
    write_json(where.eval_report, result)
    print(
        f"evaluate: {result['users_evaluated']} users, {result['catalogue_items']} items; model recall@{k} "
        f"{result[f'recall@{k}']:.4f} ndcg@{k} {result[f'ndcg@{k}']:.4f} auc {result['auc']:.4f}; popularity "
        f"recall@{k} {baseline.metrics[f'recall@{k}']:.4f} ndcg@{k} {baseline.metrics[f'ndcg@{k}']:.4f}"
        + (f"; ALS recall@{k} {result['baseline']['als'][f'recall@{k}']:.4f} ndcg@{k} "
           f"{result['baseline']['als'][f'ndcg@{k}']:.4f}" if "als" in result["baseline"] else "")
    )


if __name__ == "__main__":
    run_stage(main)
