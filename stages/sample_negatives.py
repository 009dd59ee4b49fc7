"""Stage `sample_negatives@<name>`: train positives to training examples (params `sampling`, `sampling.<name>`).

Usage: python stages/sample_negatives.py <name>, with <name> one of the `samplers` param.
"""

import sys
import time
from pathlib import Path

from gamerec import samplers
from gamerec.errors import GamerecError
from gamerec.io import atomic_path, write_json
from gamerec.prepared import Prepared
from gamerec.stage import paths, run_stage


def main() -> None:
    built = samplers.built()
    if len(sys.argv) != 2 or sys.argv[1] not in built:
        got = repr(sys.argv[1]) if len(sys.argv) == 2 else f"{len(sys.argv) - 1} arguments"
        raise GamerecError(
            f"usage: python stages/sample_negatives.py <name>; got {got}, expected one of {', '.join(built)}"
        )
    name = sys.argv[1]
    shared, params = samplers.load_params(name)
    where = paths()
    start = time.perf_counter()
    negatives = samplers.sample(name, Prepared(where.prepared).train_positives(), shared, params)
    with atomic_path(Path(where.negatives) / name) as tmp:
        samplers.write_negatives(negatives, tmp)
    write_json(Path(where.sampling_reports) / f"{name}.json", negatives.report)
    r = negatives.report
    extra = f", hard share {r['hard_share']:.3f}" if "hard_share" in r else ""
    print(f"sample_negatives@{name}: {r['examples']} examples, {r['positives']} positives, "
          f"{r['negatives']} negatives ({r['negatives_per_positive']:.2f}/positive), "
          f"{r['dropped_interacted']} interacted dropped{extra}, "
          f"loss {negatives.manifest['loss']}, {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    run_stage(main)
