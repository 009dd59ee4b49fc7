"""How each stage's cost grows with the data: `bench/run.py` at several sizes, one log-log fit per stage.

    python bench/growth.py --workdir /tmp/growth                     # 0.5m, 1m, 2m and 5m: about 20 minutes (2026-12-08)
    python bench/growth.py --workdir /tmp/growth --sizes 0.5m 1m --reports 5m.json   # reuse a report

Each size is `bench/run.py --size S --train in_batch --naive-batches 0` in its own folder
(`WORKDIR/S/`, report `WORKDIR/S.json`): the steps `dvc repro` runs, with one training (the
in_batch default) and no per-row reference. Every size has the 5m data's shape (5 reviews per
user, 50 per item), so users, items and interactions all grow by the same factor.

Per step, the exponent b of `seconds = a * interactions^b` is the least-squares slope of log
seconds on log interactions (after the k-core), and the same for the peak resident memory.
Exact ranking scores every test user against every item, so under that growth its work is
users x items, quadratic in the data: `ranking` is also fitted against users x items, where
a linear cost has exponent 1.

Writes `WORKDIR/growth.json` and the log-log plot `WORKDIR/growth.png` (or `--plot PATH`),
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PIPELINE  # noqa: E402  (bench/ is a folder of scripts; what `dvc repro` runs)

HERE = Path(__file__).resolve().parent
SIZES = ("0.5m", "1m", "2m", "5m")


def exponent(xs: list[float], ys: list[float]) -> float:
    """The slope b of the least-squares line log y = log a + b log x: how y grows with x."""
    if len(xs) < 2 or len(set(xs)) < 2:
        raise ValueError(f"exponent: needs at least two distinct sizes, got {xs}")
    slope, _ = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(slope)


def growth(reports: list[dict]) -> dict:
    """Per step of the pipeline: seconds and peak GiB at each size, and their exponents in the interactions."""
    reports = sorted(reports, key=lambda r: r["data"]["interactions"])
    n = [r["data"]["interactions"] for r in reports]
    steps = {}
    for name in PIPELINE:
        seconds = [r["steps"][name]["seconds"] for r in reports]
        peak = [r["steps"][name]["peak_rss_gib"] for r in reports]
        steps[name] = {"seconds": seconds, "peak_gib": peak,
                       "seconds_exponent": round(exponent(n, seconds), 2), "peak_exponent": round(exponent(n, peak), 2)}
    ranking = [r["steps"]["evaluate"]["ranking_seconds"] for r in reports]
    work = [r["steps"]["evaluate"]["users_ranked"] * r["steps"]["evaluate"]["catalogue_items"] for r in reports]
    steps["ranking"] = {"seconds": ranking, "seconds_exponent": round(exponent(n, ranking), 2),
                        "users_x_items": work, "exponent_in_users_x_items": round(exponent(work, ranking), 2)}
    whole, peak = [r["pipeline_seconds"] for r in reports], [r["pipeline_peak_rss_gib"] for r in reports]
    steps["whole pipeline"] = {"seconds": whole, "peak_gib": peak, "seconds_exponent": round(exponent(n, whole), 2),
                               "peak_exponent": round(exponent(n, peak), 2)}
    return {"sizes": [r["size"] for r in reports], "interactions": n,
            "users": [r["data"]["users"] for r in reports], "items": [r["data"]["items"] for r in reports],
            "steps": steps}


def table(result: dict) -> str:
    """Markdown: seconds and peak memory per step and size, then the two exponents."""
    sizes = result["sizes"]
    lines = ["| step | " + " | ".join(f"{s}: s / GiB" for s in sizes) + " | exponent: time | exponent: memory |",
             "|---" * (3 + len(sizes)) + "|"]
    for name, step in result["steps"].items():
        peaks = step.get("peak_gib", [None] * len(sizes))
        cells = [f"{s:,.1f}" + ("" if p is None else f" / {p:.2f}") for s, p in zip(step["seconds"], peaks)]
        time_exp = f"{step['seconds_exponent']:.2f}"
        if "exponent_in_users_x_items" in step:
            time_exp += f" ({step['exponent_in_users_x_items']:.2f} in users x items)"
        memory = f"{step['peak_exponent']:.2f}" if "peak_exponent" in step else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {time_exp} | {memory} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Seconds against interactions, log-log, one line per step, with a slope-1 guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array(result["interactions"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, step in result["steps"].items():
        ax.loglog(n, step["seconds"], marker="o", label=f"{name} ({step['seconds_exponent']:.2f})")
    whole = np.array(result["steps"]["whole pipeline"]["seconds"])
    ax.loglog(n, whole[0] * n / n[0], "k:", label="linear (exponent 1)")
    ax.set_xlabel("interactions after the k-core")
    ax.set_ylabel("seconds")
    ax.set_title("Cost per stage against data size (fitted exponent)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_size(size: str, workdir: Path) -> dict:
    """bench/run.py at one size, the pipeline's steps only; its report, also kept as WORKDIR/SIZE.json."""
    print(f"growth: {size} ...", file=sys.stderr, flush=True)
    out = subprocess.run([sys.executable, str(HERE / "run.py"), "--size", size, "--train", "in_batch",
                          "--naive-batches", "0", "--workdir", str(workdir / size)], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"growth: bench/run.py --size {size} failed")
    (workdir / f"{size}.json").write_text(out.stdout)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="one folder per size, the reports and the plot")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), help=f"sizes to run (of bench/run.py's; {SIZES})")
    parser.add_argument("--reports", nargs="*", type=Path, default=[], help="bench/run.py reports to include as they are")
    parser.add_argument("--plot", type=Path, help="where the plot goes (default WORKDIR/growth.png)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    reports = [json.loads(path.read_text()) for path in args.reports]
    reports += [run_size(size, args.workdir) for size in args.sizes]
    try:
        result = growth(reports)
    except (KeyError, ValueError) as e:
        sys.exit(f"growth: {e}: each report needs the pipeline's steps and at least two sizes")
    (args.workdir / "growth.json").write_text(json.dumps(result, indent=2))
    plot(result, args.plot or args.workdir / "growth.png")
    print(table(result))


if __name__ == "__main__":
    main()
