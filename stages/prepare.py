"""Stage `prepare`: raw Amazon files to encoded, filtered, temporally split data (params group `prepare`)."""

from pathlib import Path

from gamerec import config
from gamerec.cli import run_stage
from gamerec.data.prepare import prepare, write_prepared
from gamerec.data.readers import read_raw
from gamerec.io import atomic_path, write_json

OUT_DIR = Path("data/prepared")
METRICS = Path("metrics/data.json")


def main() -> None:
    params = config.load(config.PrepareParams, "prepare")
    raw = read_raw(Path(params.raw_dir), params.max_bad_fraction)
    prepared = prepare(raw, params)
    with atomic_path(OUT_DIR) as tmp:
        write_prepared(prepared, tmp)
    write_json(METRICS, prepared.report)
    r = prepared.report
    print(f"prepare: {r['interactions']} interactions, {r['users']} users, {r['items']} items, "
          f"splits {r['splits']}, coverage {r['coverage']}")


if __name__ == "__main__":
    run_stage(main)
