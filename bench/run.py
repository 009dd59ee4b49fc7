"""Benchmark the pipeline: every stage at a data size, beside the per-row loop and the machine.

    python bench/run.py --size small      # the default synthetic data set (about 2 minutes)
    python bench/run.py --size 5m         # 5 million reviews, 1 million users, 100k items
    python bench/run.py --set model.user_tower=pool   # any param of params.yaml, as dvc exp run -S

Each stage runs as its own process (the real `stages/*.py` in a scratch folder with its own
params.yaml), so its wall time and peak resident memory (the OS's, from wait4) are its own.
Training runs one epoch per sampler; `evaluate` ranks the in_batch model's test users over
the full catalogue (the ALS grid is off: it is a baseline, not the pipeline). In the same
run, two references turn the figures into ratios that survive a noisy machine:

- the per-row loop of `bench/naive.py` (a per-row Dataset and collate, the same model)
  gives `speedup_vs_per_row` for each sampler's steady-state training rate; it feeds the
  pool user tower only (`--set model.user_tower=pool`), one positive per example, where the
  attention tower trains on whole sequences;
- `bench/machine.py` measures float32 matmul at the evaluation's shapes and the memory copy
  bandwidth; the ranking step's FLOP rate is reported as a fraction of that matmul rate,
  and training's from its FLOP count per positive (`ModelConfig.flops_per_positive`).

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (bench/ is a folder of scripts, not a package)

from gamerec import samplers  # noqa: E402
from gamerec.config import ModelParams, parse  # noqa: E402
from gamerec.model import ModelConfig  # noqa: E402
from gamerec.prepared import Prepared  # noqa: E402
from gamerec.retrieval import chunk_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLERS = ("out_batch", "also_view", "in_batch")  # in_batch last: evaluate ranks its model, the default
PER_ROW_TOWERS = ("pool",)  # the user towers bench/naive.py can feed one example at a time
# what `dvc repro` runs (one train, the in_batch default): the report's pipeline_seconds
PIPELINE = ("synthesize", "prepare", *(f"sample_negatives@{s}" for s in SAMPLERS), "train@in_batch", "evaluate", "export")
SIZES = {  # synthetic params; the rest of params.yaml stays as the repository has it
    "tiny": {"users": 300, "items": 150, "interactions": 3_000},  # for the tests
    "small": {},  # params.yaml's own: 4000 users, 1200 items, 60k reviews
    # the growth sweep (bench/growth.py): the 5m data's shape (5 reviews per user, 50 per item) at 1/10 to 1x
    "0.5m": {"users": 100_000, "items": 10_000, "interactions": 500_000},
    "1m": {"users": 200_000, "items": 20_000, "interactions": 1_000_000},
    "2m": {"users": 400_000, "items": 40_000, "interactions": 2_000_000},
    "5m": {"users": 1_000_000, "items": 100_000, "interactions": 5_000_000},
}


def set_param(params: dict, assignment: str) -> None:
    """Apply `KEY=VALUE` (a dotted key of params.yaml, the value read as YAML), as `dvc exp run -S` would."""
    key, equals, value = assignment.partition("=")
    *groups, name = key.split(".")
    group = params
    for part in groups:
        group = group.get(part) if isinstance(group, dict) else None
    if not equals or not isinstance(group, dict) or name not in group:
        raise SystemExit(f"bench: --set {assignment}: expected KEY=VALUE with KEY a param of params.yaml")
    group[name] = yaml.safe_load(value)


class Bench:
    """A scratch folder with params.yaml, and the stages run in it one process at a time."""

    def __init__(self, workdir: Path, size: str, device: str = "cpu", sets: tuple[str, ...] = ()):
        self.dir = workdir
        self.profile = workdir / "profile.jsonl"
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["synthetic"].update(SIZES[size])
        params["train"]["epochs"] = 1
        if size == "tiny":  # batches of 64 positives: enough of them past the warm-up to time
            params["train"]["batch_size"] = 64
        for group in ("train", "evaluate", "export"):  # every heavy stage on the one device
            params[group]["device"] = device
        params["evaluate"]["als"]["enabled"] = False
        for assignment in sets:
            set_param(params, assignment)
        self.params = params
        self.write_params()

    def write_params(self) -> None:
        (self.dir / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False))

    def run(self, name: str, *argv: str) -> dict:
        """Run one Python script in the folder; its wall seconds and peak RSS (GiB, see peak.py)."""
        log = self.dir / "logs" / f"{name.replace('@', '_')}.log"
        log.parent.mkdir(exist_ok=True)
        peak = self.dir / "logs" / "peak"
        env = {**os.environ, "GAMEREC_PROFILE": str(self.profile), "DVC_NO_ANALYTICS": "1", "BENCH_PEAK_FILE": str(peak)}
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with log.open("w") as out:
            code = subprocess.call([sys.executable, str(REPO / "bench" / "peak.py"), *argv], cwd=self.dir, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        if code != 0:
            sys.exit(f"bench: {name} failed; its output:\n{log.read_text()[-3000:]}")
        gib = int(peak.read_text()) / 2**20
        print(f"bench: {name} {wall:.1f} s, peak {gib:.2f} GiB", file=sys.stderr, flush=True)
        return {"seconds": round(wall, 2), "peak_rss_gib": round(gib, 3)}

    def stage(self, name: str, *args: str) -> dict:
        return self.run(name, str(REPO / "stages" / f"{name.split('@')[0]}.py"), *args)

    def figures(self, step: str, **match) -> dict:
        """The last figures a stage recorded under `step` (see gamerec.profile)."""
        rows = [json.loads(line) for line in self.profile.read_text().splitlines()]
        return [r for r in rows if r["step"] == step and all(r.get(k) == v for k, v in match.items())][-1]

    def metrics(self, path: str) -> dict:
        return json.loads((self.dir / path).read_text())


def _rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds else float("nan")


def _fraction(achieved: float, peak: float) -> float:
    """achieved / peak to three significant digits (a tiny run's fraction is small, not zero)."""
    return float(f"{achieved / peak:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--naive-batches", type=int, default=30,
                        help="timed batches of the per-row loop per sampler (0: no per-row loop)")
    parser.add_argument("--train", nargs="+", choices=SAMPLERS, default=list(SAMPLERS),
                        help="samplers trained, one epoch each (in_batch among them: evaluate ranks its model)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param of params.yaml for every stage (e.g. model.user_tower=pool)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="train, evaluate and export on this device (cuda: the GPU check, rates against its matmul)")
    args = parser.parse_args()
    if "in_batch" not in args.train:
        parser.error("--train: in_batch is the model evaluate and export use; list it")
    args.train = [s for s in SAMPLERS if s in args.train]  # in_batch last, whatever order was given
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"gamerec-bench-{args.size}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = run_all(Bench(workdir, args.size, args.device, tuple(args.set)), args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    json.dump(_no_nan(report), sys.stdout, indent=2)  # strict JSON: a rate with nothing timed is null
    print()


def run_all(bench: Bench, args: argparse.Namespace) -> dict:
    steps: dict[str, dict] = {}
    steps["synthesize"] = bench.stage("synthesize")
    steps["prepare"] = bench.stage("prepare")
    where = bench.params["paths"]
    data = bench.metrics(where["data_report"])
    raw = data["cleaning"]["raw_interactions"]
    steps["synthesize"]["reviews_per_second"] = _rate(raw, steps["synthesize"]["seconds"])
    steps["prepare"]["reviews_per_second"] = _rate(raw, steps["prepare"]["seconds"])
    examples = {}
    for s in SAMPLERS:
        step = steps[f"sample_negatives@{s}"] = bench.stage(f"sample_negatives@{s}", s)
        examples[s] = bench.metrics(f"{where['sampling_reports']}/{s}.json")
        step["examples_per_second"] = _rate(examples[s]["examples"], step["seconds"])

    prepared = Prepared(bench.dir / bench.params["paths"]["prepared"])
    cfg = ModelConfig(**prepared.sizes, arch=parse(ModelParams, bench.params["model"], "model"))
    shapes = _data_shapes(prepared)
    print("bench: the machine's matmul and copy rates ...", file=sys.stderr, flush=True)
    eval_rows = min(chunk_rows(cfg.num_items, bench.params["evaluate"]["memory_mb"]), data["splits"]["test"])
    matmul = machine.matmul_gflops(eval_rows, cfg.num_items, cfg.arch.dim, device=args.device)
    matmul_bf16 = machine.matmul_gflops(eval_rows, cfg.num_items, cfg.arch.dim, dtype=torch.bfloat16, device=args.device)
    copy = machine.copy_gbps()

    batch_size = bench.params["train"]["batch_size"]
    for s in args.train:
        bench.params["sampler"] = s
        bench.write_params()
        step = steps[f"train@{s}"] = bench.stage(f"train@{s}")
        ours = bench.figures("train", sampler=s)["positives_per_second"]
        ex = examples[s]
        loss = bench.params["train"]["loss"]
        loss = samplers.get(s).loss if loss == "auto" else loss
        flops = cfg.flops_per_positive(loss, batch_size, ex["negatives_per_positive"],
                                       shapes["tokens_per_item"], shapes["history_per_user"])
        step.update({
            "examples": ex["examples"],
            "positives_per_second": round(ours, 1),
            "flops_per_positive": round(flops),
            "gflops": round(ours * flops / 1e9, 1),
            "fraction_of_matmul": _fraction(ours * flops / 1e9, matmul),
        })
        if args.naive_batches and bench.params["model"]["user_tower"] not in PER_ROW_TOWERS:
            step["per_row_reference"] = f"none: the per-row loop feeds the {' or '.join(PER_ROW_TOWERS)} user tower"
        elif args.naive_batches:
            naive = bench.run(f"per_row@{s}", str(REPO / "bench" / "naive.py"), "--workdir", ".",
                              "--sampler", s, "--batches", str(args.naive_batches))
            naive.update(json.loads((bench.dir / "logs" / f"per_row_{s}.log").read_text().splitlines()[-1]))
            step.update({
                "per_row_positives_per_second": round(naive["positives_per_second"], 1),
                "speedup_vs_per_row": round(ours / naive["positives_per_second"], 1),
                "per_row_reference": naive,
            })

    steps["evaluate"] = bench.stage("evaluate")
    ranked = bench.figures("evaluate")
    gflops = ranked["flops"] / ranked["ranking_seconds"] / 1e9
    steps["evaluate"].update({
        "users_ranked": ranked["users"],
        "catalogue_items": ranked["items"],
        "ranking_seconds": round(ranked["ranking_seconds"], 2),
        "users_ranked_per_second": _rate(ranked["users"], ranked["ranking_seconds"]),
        "ranking_gflops": round(gflops, 1),
        "fraction_of_matmul": _fraction(gflops, matmul),  # of float32's: above 1 is faster than float32 can be
        "fraction_of_bf16_matmul": _fraction(gflops, matmul_bf16),
        "precision": bench.params["evaluate"]["precision"],
    })
    steps["export"] = bench.stage("export")
    exported, timed = bench.metrics(where["export_report"]), bench.figures("export")
    steps["export"].update({
        "items_per_second": _rate(exported["items"], steps["export"]["seconds"]),
        "served_index": exported["served"],
        "hnsw_recall@10": exported["hnsw"]["recall@10"],
        "hnsw_query_ms_p50": timed["hnsw_query_ms_p50"],
        "flat_query_ms_p50": timed["flat_query_ms_p50"],
    })
    return {
        "size": args.size,
        "data": {"reviews": raw, "interactions": data["interactions"], "users": data["users"],
                 "items": data["items"], "train_positives": data["splits"]["train"]},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "matmul_gflops": round(matmul, 1), "bf16_matmul_gflops": round(matmul_bf16, 1),
                    "matmul_shape": [eval_rows, cfg.arch.dim, cfg.num_items],
                    "copy_gbps": round(copy, 1)},
        "steps": steps,
        # what `dvc repro` runs (one train, the in_batch default), and the peak of any one step
        "pipeline_seconds": round(sum(steps[name]["seconds"] for name in PIPELINE), 1),
        "pipeline_peak_rss_gib": max(steps[name]["peak_rss_gib"] for name in PIPELINE),
        "all_steps_seconds": round(sum(v["seconds"] for v in steps.values()), 1),
    }


def _no_nan(value):
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def _data_shapes(prepared: Prepared) -> dict[str, float]:
    """Mean description tokens per item and train history per user: the FLOP count's inputs."""
    text = prepared.text
    train = prepared.split("train")
    return {"tokens_per_item": len(text.indices) / max(text.rows, 1),
            "history_per_user": len(train) / max(train.user.nunique(), 1)}


if __name__ == "__main__":
    main()
