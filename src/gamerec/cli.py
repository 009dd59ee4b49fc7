"""The `gamerec` command: recommendations and the service from what the `export` stage wrote.

`gamerec recommend`, `gamerec similar` and `gamerec serve` read what the `export` stage wrote
(`paths.serving` of ./params.yaml, or --models). A user error (unknown item, missing files, bad k) is one line on
stderr and exit status 1, never a traceback. Nothing here imports PyTorch: a command costs
loading the export, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator

from gamerec import config
from gamerec.errors import GamerecError
from gamerec.stage import paths, run_stage

FILTERS = ("platform", "brand", "min_price", "max_price", "exclude")  # `recommend`'s filter options, as named in answers


def _k(text: str) -> int:
    from gamerec.recommender import check_k

    try:
        return check_k(int(text))
    except (ValueError, GamerecError) as exc:
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, GamerecError) else f"{text!r} is not an integer")


def _asins(text: str) -> list[str]:
    """`ASIN,ASIN,...` as a list, blanks dropped."""
    return [asin.strip() for asin in text.split(",") if asin.strip()]


def _filters(query: dict) -> str:
    """The question's filters in words, e.g. ` (PlayStation 4, $10.00 to $30.00, 2 left out)`."""
    low, high = query.get("min_price"), query.get("max_price")
    parts = [query.get("platform"), query.get("brand") and f"brand {query['brand']}",
             (low is not None or high is not None) and f"${low or 0:.2f} to " + ("any price" if high is None else f"${high:.2f}"),
             query.get("exclude") and f"{len(query['exclude'])} left out"]
    shown = [part for part in parts if part]
    return f" ({', '.join(shown)})" if shown else ""


def format_answer(answer: dict) -> str:
    """An answer as readable lines: a header, then per game rank, ASIN, score, price, platform, brand, title,
    and the game it is recommended because of."""
    query, items = answer["query"], answer["items"]
    if "item" in query:
        head = f"{len(items)} games nearest to {query['item']} ({(query['title'] or 'no title')[:50]})"
    elif answer["note"]:
        head = answer["note"]
    elif query["user"] is not None:
        head = f"{len(items)} games for user {query['user']} that they do not have ({answer['owned']} they have)"
    else:
        head = f"{len(items)} games to play after the {answer['owned']} given"
    lines = [f"{head}{'' if 'item' in query else _filters(query)}; model {answer['model_version'][:12]}"]
    for item in items:
        price = "" if item["price"] is None else f"${item['price']:.2f}"
        lines.append(f"{item['rank']:>3}  {item['asin']:<12} {item['score']:>9.4f}  {price:>9}  "
                     f"{(item['platform'] or '-')[:16]:<16}  {(item['brand'] or '-')[:20]:<20}  {(item['title'] or '-')[:60]}")
        if item["because"]:
            because = item["because"]
            lines.append(f"{'':>17}because you played {because['asin']} {(because['title'] or '-')[:50]} "
                         f"(similarity {because['similarity']:.2f})")
    return "\n".join(lines)


def _models(args: argparse.Namespace) -> str:
    """--models, or the export folder that ./params.yaml names (`paths.serving`)."""
    if args.models:
        return args.models
    if not config.PARAMS_FILE.is_file():
        raise GamerecError("no --models folder given, and no params.yaml here that names the export's; "
                           "run in the repository or pass --models")
    return paths().serving


def _user_batches(path: str, size: int) -> Iterator[list[str]]:
    """The reviewer ids of a file (one a line, blanks skipped; `-` is stdin), `size` at a time."""
    try:
        handle = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        raise GamerecError(f"--users-file {path}: cannot read it ({exc.strerror})") from None
    with handle:
        batch: list[str] = []
        try:
            for line in handle:
                if line.strip():
                    batch.append(line.strip())
                if len(batch) == size:
                    yield batch
                    batch = []
        except UnicodeDecodeError as exc:
            raise GamerecError(f"--users-file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if batch:
            yield batch


def _recommend(args: argparse.Namespace) -> None:
    """A user's or a list's games as a table or JSON; for --users-file, one JSON answer per line."""
    from gamerec.recommender import MAX_BATCH, Recommender

    recommender = Recommender(_models(args))
    filters = {name: getattr(args, name) for name in FILTERS}
    if args.users_file:
        for users in _user_batches(args.users_file, MAX_BATCH):
            for answer in recommender.recommend_many([{"user": user, "k": args.k, **filters} for user in users], None):
                print(json.dumps(answer))
        return
    answer = recommender.recommend(args.user, args.k, items=args.items, **filters)
    print(json.dumps(answer, indent=2) if args.json else format_answer(answer))


def _similar(args: argparse.Namespace) -> None:
    from gamerec.recommender import Recommender

    answer = Recommender(_models(args)).similar(args.item, args.k)
    print(json.dumps(answer, indent=2) if args.json else format_answer(answer))


def _compare(args: argparse.Namespace) -> None:
    """Two scorers' recall and ndcg, and their difference, with paired bootstrap intervals."""
    from gamerec import compare

    rows = compare.compare(args.a, args.b, paths().ranks, args.k, args.samples, args.seed)
    print(json.dumps(rows, indent=2) if args.json else compare.format_rows(args.a, args.b, rows))


def _tune(args: argparse.Namespace) -> None:
    """Queue the grid as DVC experiments, run them within the budget, rank them on validation, apply the best."""
    from dataclasses import replace

    from gamerec import tuning

    params = config.load(config.TuneParams, "tune")
    grid = dict(params.grid)
    for option in args.grid:  # --grid key=a,b replaces the params' values for that key
        key, _, values = option.partition("=")
        grid[key] = values.split(",")
    params = replace(params, **{k: v for k, v in vars(args).items() if k in ("name", "jobs", "budget_minutes") and v})
    fixed = dict(option.partition("=")[::2] for option in args.set)
    names = tuning.queue(params.name, tuning.points(grid), fixed, params.target)
    print(f"tune: {len(names)} experiments queued ({params.name}-1 .. {params.name}-{len(names)})", flush=True)
    finished = tuning.run_queue(params.jobs, params.budget_minutes)
    rows = tuning.results(names)
    if not rows:
        raise GamerecError(f"tune: none of the {len(names)} experiments finished; see `dvc queue status`")
    for row in rows:
        values = ", ".join(f"{key}={_param(row['params'], key)}" for key in grid)
        print(f"{row['name']:<16} val_recall@10 {row['val_recall@10']:.4f}  {values}")
    if not finished:
        print(f"tune: the budget of {params.budget_minutes} minutes ran out; {len(rows)} of {len(names)} finished")
    if params.apply and not args.no_apply:
        tuning.apply(rows[0]["name"])
        print(f"tune: applied {rows[0]['name']} (dvc exp apply); `dvc repro` evaluates it on test")


def _param(params: dict, dotted: str):
    for key in dotted.split("."):
        params = params.get(key, {}) if isinstance(params, dict) else {}
    return params


def _report(args: argparse.Namespace) -> None:
    """Write a report's markdown and plots, then print the markdown."""
    from pathlib import Path

    from gamerec import report

    out = Path(args.out)
    written = report.samplers(out, args.exp) if args.report == "samplers" else report.pull_request(args.base, out)
    print(written.read_text(), end="")
    print(f"report: wrote {written} and the plots it links, in {out}/", file=sys.stderr)


def _serve(args: argparse.Namespace) -> None:
    from gamerec.service import serve

    serve(_models(args), args.host, args.port)


def _add_recommend(commands) -> None:
    common = _common()
    sub = commands.add_parser("recommend", parents=[common], help="top-k games for a user or after a list of games",
                              description="Top-k games for a known user, or after a list of games, without those games.")
    who = sub.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="reviewer id (Amazon reviewerID / user_id)")
    who.add_argument("--items", type=_asins, metavar="ASIN,ASIN,...", help="the games played, oldest first")
    who.add_argument("--users-file", metavar="FILE", help="one reviewer id per line ('-': stdin): one JSON answer a line")
    sub.add_argument("--platform", help="only games of this platform (any case), e.g. 'PlayStation 4'")
    sub.add_argument("--brand", help="only games of this brand (any case)")
    sub.add_argument("--min-price", type=float, help="only games with a price of at least this")
    sub.add_argument("--max-price", type=float, help="only games with a price of at most this")
    sub.add_argument("--exclude", type=_asins, default=[], metavar="ASIN,ASIN,...", help="games never to recommend")
    sub.set_defaults(run=_recommend)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models", help="folder the export stage wrote (default: paths.serving of ./params.yaml)")
    common.add_argument("-k", type=_k, default=10, help="how many games (1 to 100, default 10)")
    common.add_argument("--json", action="store_true", help="print the service's JSON answer instead of a table")
    return common


def _add_compare(commands) -> None:
    """`gamerec compare A B`."""
    compare = commands.add_parser(
        "compare", help="is B better than A beyond noise? (paired bootstrap over test users)",
        description="A and B are REV[:SCORER]: REV is workspace, a git revision or a DVC experiment name; SCORER "
                    "is model (default), als or popularity. Example: gamerec compare main exp-1a2b3 or "
                    "gamerec compare workspace:als workspace:model")
    compare.add_argument("a")
    compare.add_argument("b")
    compare.add_argument("-k", type=int, default=10, help="the cutoff of recall and ndcg (default 10)")
    compare.add_argument("--samples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--json", action="store_true", help="print JSON instead of lines")
    compare.set_defaults(run=_compare)


def _add_tune(commands) -> None:
    """`gamerec tune`."""
    tune = commands.add_parser(
        "tune", help="search params on validation through DVC experiments, apply the best (params group tune)",
        description="Queues one `dvc exp run --queue` per point of tune.grid, runs the queue within "
                    "tune.budget_minutes, ranks the experiments by validation recall and applies the best.")
    tune.add_argument("--grid", action="append", default=[], metavar="KEY=A,B",
                      help="values to try for a param (replaces tune.grid's for that key)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a param fixed for every point")
    tune.add_argument("--name", help="experiment name prefix (default tune.name)")
    tune.add_argument("--jobs", type=int, help="experiments at once (default tune.jobs)")
    tune.add_argument("--budget-minutes", type=float, help="time budget (default tune.budget_minutes)")
    tune.add_argument("--no-apply", action="store_true", help="rank only; leave the workspace as it is")
    tune.set_defaults(run=_tune)


def _add_report(commands) -> None:
    """`gamerec report samplers` and `gamerec report pr`."""
    report = commands.add_parser("report", help="markdown and plots from the pipeline's outputs: samplers, a pull request",
                                 description="Reads the committed metrics, plots and training curves of revisions "
                                             "(experiments, commits, the workspace) and writes markdown and PNG plots.")
    kinds = report.add_subparsers(dest="report", required=True)
    samplers = kinds.add_parser("samplers", help="HEAD's experiments side by side (waits for the queue first)",
                                description="Waits for the experiment queue, then writes samplers.md (each "
                                            "experiment's model and both baselines) and recall@K and training plots.")
    samplers.add_argument("--exp", nargs="+", metavar="NAME", help="only these experiments (default: every finished one of HEAD)")
    pr = kinds.add_parser("pr", help="the workspace against a base revision: metrics and params diffs, plots",
                          description="Writes pr.md: dvc metrics diff and dvc params diff against --base, and "
                                      "recall@K and training plots of the base beside the workspace.")
    pr.add_argument("--base", required=True, help="the revision to compare with, e.g. main or origin/main")
    for sub in (samplers, pr):
        sub.add_argument("--out", default="report", help="folder to write into (default report/)")
        sub.set_defaults(run=_report)


def parser() -> argparse.ArgumentParser:
    """The `gamerec` command's arguments."""
    top = argparse.ArgumentParser(prog="gamerec", description="Recommend video games with the exported two-tower model.")
    commands = top.add_subparsers(dest="command", required=True)
    _add_recommend(commands)
    _add_compare(commands)
    _add_tune(commands)
    _add_report(commands)
    similar = commands.add_parser("similar", parents=[_common()], help="the games nearest to a game in the item tower's space",
                                  description="The games nearest to a game in the item tower's space.")
    similar.add_argument("--item", required=True, help="the game's ASIN")
    similar.set_defaults(run=_similar)
    serve = commands.add_parser("serve", help="the HTTP service (FastAPI on uvicorn)",
                                description="GET /v1/recommend, POST /v1/recommend, GET /v1/similar, GET /v1/health; "
                                            "reloads when the export changes (or on SIGHUP); see docs/serving.md")
    serve.add_argument("--models", help="folder the export stage wrote (default: paths.serving of ./params.yaml)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.set_defaults(run=_serve)
    return top


def main(argv: list[str] | None = None) -> None:
    """The `gamerec` console script."""
    args = parser().parse_args(argv)
    try:
        run_stage(lambda: args.run(args), interrupted="interrupted", share_cores=False)
    except BrokenPipeError:  # the reader went away (`gamerec recommend ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail again
        sys.exit(1)
