"""Training throughput with 1, 2, ... data-parallel processes: the same data, the same global batches.

    python bench/scaling.py --workdir DIR [--processes 1 2] [--samplers in_batch] [--epochs 1]

DIR holds `data/prepared` and `data/negatives/<sampler>` (the repository after `dvc repro`, or
a `bench/run.py --workdir`). Each run is the real `stages/train.py` in a scratch folder that
links DIR's data, with DIR's params.yaml changed only in `sampler`, `train.epochs`,
`train.processes` and `train.resume: false`, so nothing in DIR is touched. Prints one JSON
list: per sampler and process count, the steady-state positives per second (after the first
10 batches, all processes together), the wall seconds and the best validation recall.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STAGE = Path(__file__).resolve().parents[1] / "stages" / "train.py"


def train_once(workdir: Path, sampler: str, processes: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="gamerec-scaling-") as scratch:
        scratch = Path(scratch)
        params = yaml.safe_load((workdir / "params.yaml").read_text())
        for name in ("prepared", "negatives"):  # the inputs, linked where params.yaml's paths say
            link = scratch / params["paths"][name]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((workdir / params["paths"][name]).resolve())
        params["sampler"] = sampler
        params["train"].update(epochs=epochs, processes=processes, resume=False)
        (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        profile = scratch / "profile.jsonl"
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(STAGE)], cwd=scratch, capture_output=True, text=True,
                                env={**os.environ, "GAMEREC_PROFILE": str(profile)})
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"train ({sampler}, {processes} processes) failed:\n{result.stderr[-3000:]}")
        figures = json.loads(profile.read_text().splitlines()[-1])
        summary = json.loads((scratch / params["paths"]["train_report"]).read_text())
    return {
        "sampler": sampler,
        "processes": processes,
        "positives_per_second": round(figures["positives_per_second"], 1),
        "wall_seconds": round(seconds, 1),
        "val_recall@k": summary[next(k for k in summary if k.startswith("val_recall@"))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samplers", nargs="+", default=["in_batch"])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    rows = [train_once(args.workdir, s, n, args.epochs) for s in args.samplers for n in args.processes]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
