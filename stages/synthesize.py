"""Stage `synthesize`: write the embedded synthetic Amazon 2018 data set (params group `synthetic`)."""

from pathlib import Path

from gamerec import config
from gamerec.cli import run_stage
from gamerec.data import synthetic
from gamerec.io import atomic_path

OUT_DIR = Path("data/raw/synthetic")


def main() -> None:
    params = config.load(config.SyntheticParams, "synthetic")
    with atomic_path(OUT_DIR) as tmp:
        tmp.mkdir()
        summary = synthetic.generate(params, tmp)
    print(f"synthesize: wrote {OUT_DIR}: {summary}")


if __name__ == "__main__":
    run_stage(main)
