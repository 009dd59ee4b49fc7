"""Stage `synthesize`: write the embedded synthetic Amazon 2018 data set (params group `synthetic`)."""

from pathlib import Path

from gamerec import config
from gamerec.data import synthetic
from gamerec.io import atomic_path
from gamerec.stage import paths, run_stage


def main() -> None:
    params = config.load(config.SyntheticParams, "synthetic")
    out = Path(paths().synthetic)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        summary = synthetic.generate(params, tmp)
    print(f"synthesize: wrote {out}: {summary}")


if __name__ == "__main__":
    run_stage(main)
