"""The Performance tables of docs/performance.md from `bench/run.py` reports.

Usage: python bench/table.py small.json 5m.json   (any number of reports, one column group each)
"""

from __future__ import annotations

import json
import sys

SAMPLERS = ("out_batch", "also_view", "in_batch")


def _fmt(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def step_table(reports: list[dict]) -> str:
    """Per step: seconds, rate and peak memory, one column group per report."""
    rates = {"synthesize": ("reviews_per_second", "reviews/s"), "prepare": ("reviews_per_second", "reviews/s"),
             "evaluate": ("users_ranked_per_second", "users ranked/s"), "export": ("items_per_second", "items/s")}
    head = "| step | " + " | ".join(f"{r['size']}: s | {r['size']}: rate | {r['size']}: peak GiB" for r in reports) + " |"
    lines = [head, "|---" * (1 + 3 * len(reports)) + "|"]
    names = list(dict.fromkeys(name for r in reports for name in r["steps"]))  # every report's steps, in order
    for name in names:
        cells = []
        for r in reports:
            step = r["steps"].get(name)
            if step is None:  # a step this run skipped (bench/run.py --train)
                cells += ["", "", ""]
                continue
            key, unit = rates.get(name, ("positives_per_second", "positives/s") if name.startswith("train")
                                  else ("examples_per_second", "examples/s"))
            cells += [_fmt(step["seconds"], 1), f"{_fmt(step.get(key))} {unit}", _fmt(step["peak_rss_gib"], 2)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for r in reports:
        cells += [f"**{_fmt(r['pipeline_seconds'], 0)}**", "", f"**{_fmt(r['pipeline_peak_rss_gib'], 2)}**"]
    lines.append("| whole pipeline (`dvc repro`: one train, in_batch) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_table(reports: list[dict]) -> str:
    """Per size and sampler: our rate, the per-row loop's, the speedup and the FLOP fractions."""
    lines = ["| size | sampler | positives/s | per-row loop | speedup | FLOPs / positive | GFLOP/s | of matmul |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        for s in SAMPLERS:
            t = r["steps"].get(f"train@{s}")
            if t is None:  # not trained in this run (bench/run.py --train)
                continue
            speedup = t.get("speedup_vs_per_row")  # none without the per-row loop (the attention tower)
            lines.append(f"| {r['size']} | {s} | {_fmt(t['positives_per_second'])} | "
                         f"{_fmt(t.get('per_row_positives_per_second'))} | "
                         f"{'n/a' if speedup is None else f'**{speedup:.1f}x**'} | "
                         f"{t['flops_per_positive'] / 1e6:.2f} M | {_fmt(t['gflops'], 1)} | {_fmt(t['fraction_of_matmul'], 2)} |")
    return "\n".join(lines)


def eval_table(reports: list[dict]) -> str:
    """The ranking step against the machine's matmul rate."""
    lines = ["| size | users x items x dim | ranking s | users/s | GFLOP/s | matmul GFLOP/s | of matmul | copy GB/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        e, m = r["steps"]["evaluate"], r["machine"]
        lines.append(f"| {r['size']} | {e['users_ranked']:,} x {e['catalogue_items']:,} x {m['matmul_shape'][1]} | "
                     f"{e['ranking_seconds']:.1f} | {_fmt(e['users_ranked_per_second'])} | {e['ranking_gflops']:.1f} | "
                     f"{m['matmul_gflops']:.1f} | **{e['fraction_of_matmul']:.2f}** | {m['copy_gbps']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    reports = [json.loads(open(path).read()) for path in sys.argv[1:]]
    if not reports:
        sys.exit("usage: python bench/table.py REPORT.json [REPORT.json ...]")
    print(step_table(reports), train_table(reports), eval_table(reports), sep="\n\n")


if __name__ == "__main__":
    main()
