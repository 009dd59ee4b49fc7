"""Stage `prepare`: raw Amazon files to encoded, filtered, temporally split data (params group `prepare`)."""

from pathlib import Path

from gamerec import config
from gamerec.data.prepare import prepare, write_prepared
from gamerec.data.readers import read_raw
from gamerec.io import atomic_path, write_json
from gamerec.stage import paths, run_stage


def main() -> None:
    params = config.load(config.PrepareParams, "prepare")
    where = paths()
    raw = read_raw(Path(params.raw_dir), params.max_bad_fraction)
    prepared = prepare(raw, params)
    with atomic_path(where.prepared) as tmp:
        write_prepared(prepared, tmp)
    write_json(where.data_report, prepared.report)
    r = prepared.report
    splits = ", ".join(f"{name} {count}" for name, count in r["splits"].items())
    coverage = ", ".join(f"{name} {share:.0%}" for name, share in r["coverage"].items())
    print(f"prepare: {r['interactions']} interactions, {r['users']} users, {r['items']} items; "
          f"splits {splits}; items with {coverage}")


if __name__ == "__main__":
    run_stage(main)
