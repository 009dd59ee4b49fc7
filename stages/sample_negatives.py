"""Stage `sample_negatives@<name>`: train positives to training examples (params group `sampling`).

Usage: python stages/sample_negatives.py <name>, with <name> one of the `samplers` param.
"""

import sys
import time
from pathlib import Path

from gamerec import config
from gamerec.cli import run_stage
from gamerec.errors import GamerecError
from gamerec.io import atomic_path, write_json
from gamerec.samplers import load_train_positives, sample, write_negatives

PREPARED = Path("data/prepared")
OUT_ROOT = Path("data/negatives")
METRICS_ROOT = Path("metrics/sampling")


def main() -> None:
    samplers = config.load_samplers()
    if len(sys.argv) != 2 or sys.argv[1] not in samplers:
        got = repr(sys.argv[1]) if len(sys.argv) == 2 else f"{len(sys.argv) - 1} arguments"
        raise GamerecError(
            f"usage: python stages/sample_negatives.py <name>; got {got}, expected one of {', '.join(samplers)}"
        )
    name = sys.argv[1]
    params = config.load(config.SamplingParams, "sampling")
    start = time.perf_counter()
    positives = load_train_positives(PREPARED)
    negatives = sample(name, positives, params)
    with atomic_path(OUT_ROOT / name) as tmp:
        write_negatives(negatives, tmp)
    write_json(METRICS_ROOT / f"{name}.json", negatives.report)
    r = negatives.report
    extra = f", hard share {r['hard_share']:.3f}" if "hard_share" in r else ""
    print(f"sample_negatives@{name}: {r['examples']} examples, {r['positives']} positives, "
          f"{r['negatives']} negatives ({r['negatives_per_positive']:.2f}/positive), "
          f"{r['dropped_interacted']} interacted dropped{extra}, "
          f"loss {negatives.manifest['loss']}, {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    run_stage(main)
