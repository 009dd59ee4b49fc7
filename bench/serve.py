"""Benchmark of serving: the real `gamerec serve` over loopback, the user tower, and exact versus ANN search.

    python bench/serve.py [--models models/serving] [--index flat|hnsw] [--requests 3000] [--batches 100]
                          [--concurrency 4] [--queries 1000] [--checkpoint models/model.pt]

1. Starts `gamerec serve` on a free 127.0.0.1 port (a separate process, as users run it)
   and sends, after a warm-up, from `--concurrency` client threads on keep-alive
   connections, three kinds of request, one kind at a time, and reports requests per second
   and p50/p99 latency as the client sees them:
   - `user`: `--requests` GET /v1/recommend?user=...&k=10 for users of the export, at random;
   - `items`: `--requests` GET /v1/recommend?items=...&k=10, each a user's last 5 games (the
     user tower embeds them per request);
   - `batch`: `--batches` POST /v1/recommend of 100 questions, users and 5-game lists in turn.
   `--index` serves the other index kind than the export chose (built into a scratch copy).
2. In this process, times the user tower on one 5-game list `--queries` times: the exported
   tower, and with `--checkpoint` (a train checkpoint) the PyTorch tower serving falls back
   to for towers it cannot run in NumPy.
3. Builds a flat and an HNSW index over the exported item vectors and times `--queries`
   single-user queries of each (search with the user's own games excluded inside it), with
   HNSW's recall@10 against the flat index.

Prints one JSON object. The loops are bounded and never leave the machine. The client's
threads share the machine with the server: on 2 cores the numbers are a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np

from gamerec import ann
from gamerec.config import ExportParams
from gamerec.csr import Csr
from gamerec.export import Catalogue, build_and_measure
from gamerec.recommender import Recommender
from gamerec.tower import TorchTower

WARMUP = 100
BATCH = 100  # questions per POST
HISTORY = 5  # games per list of the `items` requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(models: str, port: int) -> subprocess.Popen:
    gamerec = str(Path(sys.executable).parent / "gamerec")
    proc = subprocess.Popen([gamerec, "serve", "--models", models, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # stderr: an access line a request
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gamerec serve stopped with status {proc.returncode}; run it by hand to see why")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("gamerec serve did not start within 300 s")


def with_index(models: str, kind: str, scratch: Path) -> str:
    """A folder serving `kind`: `models` itself if it already does, else links to its files and a new index."""
    recommender = Recommender(models)
    if recommender.health()["index"] == kind:
        return models
    for path in Path(models).iterdir():
        if path.name != "index.faiss":
            (scratch / path.name).symlink_to(path.resolve())
    m = recommender.manifest
    faiss.write_index(ann.build(recommender.item_vectors, kind, m["hnsw_m"], m["ef_construction"]),
                      str(scratch / "index.faiss"))
    return str(scratch)


def load_test(port: int, requests: list[tuple[str, str, bytes | None]], concurrency: int) -> tuple[np.ndarray, int, float]:
    """Send every (method, path, body) once from `concurrency` threads; (latencies in s, errors, wall seconds)."""
    latencies = np.zeros(len(requests))
    errors = [0] * concurrency

    def client(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(worker, len(requests), concurrency):
            method, path, body = requests[i]
            start = time.perf_counter()
            conn.request(method, path, body, {"content-type": "application/json"} if body else {})
            response = conn.getresponse()
            response.read()
            latencies[i] = time.perf_counter() - start
            errors[worker] += response.status != 200
        conn.close()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, sum(errors), time.perf_counter() - start


def last_games(recommender: Recommender, user: int) -> np.ndarray:
    """The items rows of a user's last HISTORY games, oldest first."""
    indptr, indices = recommender.known
    return indices[max(indptr[user], indptr[user + 1] - HISTORY) : indptr[user + 1]]


def request_kinds(recommender: Recommender, rng: np.random.Generator, n: int, batches: int) -> dict[str, list]:
    """The three kinds of request, `n` (+ warm-up) each of the GETs and `batches` POSTs, over random users."""
    user_ids = list(recommender.row_of_user)
    asins = recommender.items.asin.to_numpy()

    def question(u: int, as_list: bool) -> dict:
        return {"items": asins[last_games(recommender, u)].tolist(), "k": 10} if as_list else {"user": user_ids[u], "k": 10}

    users = rng.choice(len(user_ids), WARMUP + n)
    lists = rng.choice(len(user_ids), WARMUP + n)
    posts = rng.choice(len(user_ids), (WARMUP // 10 + batches, BATCH))
    return {
        "user": [("GET", f"/v1/recommend?user={user_ids[u]}&k=10", None) for u in users],
        "items": [("GET", f"/v1/recommend?items={','.join(question(u, True)['items'])}&k=10", None) for u in lists],
        "batch": [("POST", "/v1/recommend", json.dumps({"queries": [question(u, i % 2 == 1) for i, u in enumerate(row)]})
                   .encode()) for row in posts],
    }


def rates(latencies: np.ndarray, errors: int, seconds: float) -> dict:
    ms = latencies * 1000
    return {"requests": len(latencies), "errors": errors, "seconds": round(seconds, 3),
            "requests_per_second": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def tower_latency(towers: dict, recommender: Recommender, n: int) -> dict:
    """p50/p99 ms of embedding one 5-game list, per tower (NumPy, or PyTorch after its first call)."""
    histories = [last_games(recommender, u) for u in np.random.default_rng(1).choice(len(recommender.row_of_user), n)]
    report = {}
    for name, tower in towers.items():
        tower.load()  # PyTorch, once
        times = []
        for rows in histories:
            history = Csr(np.array([0, len(rows)]), rows)
            start = time.perf_counter()
            tower.embed(history)
            times.append(time.perf_counter() - start)
        ms = np.array(times) * 1000
        report[name] = {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}
    return report


def serve_and_measure(args: argparse.Namespace, recommender: Recommender) -> dict:
    kinds = request_kinds(recommender, np.random.default_rng(0), args.requests, args.batches)
    port = free_port()
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        served = with_index(args.models, args.index, Path(scratch)) if args.index else args.models
        proc = start_service(served, port)
        try:
            for kind, requests in kinds.items():
                warmup = WARMUP // 10 if kind == "batch" else WARMUP
                load_test(port, requests[:warmup], args.concurrency)
                report[kind] = rates(*load_test(port, requests[warmup:], args.concurrency))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report["batch"]["questions_per_second"] = round(report["batch"]["requests_per_second"] * BATCH, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models/serving", help="the export stage's folder (default: models/serving)")
    parser.add_argument("--index", choices=ann.KINDS, help="serve this index kind (default: the exported one)")
    parser.add_argument("--requests", type=int, default=3000, help="GET requests of each kind")
    parser.add_argument("--batches", type=int, default=100, help=f"POSTs of {BATCH} questions")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--queries", type=int, default=1000, help="single queries timed per index kind and tower")
    parser.add_argument("--checkpoint", help="a train checkpoint (models/model.pt): time the PyTorch tower too")
    args = parser.parse_args()

    recommender = Recommender(args.models)
    service = serve_and_measure(args, recommender)
    towers = {f"exported ({recommender.manifest['user_tower']})": recommender.tower} if recommender.tower else {}
    if args.checkpoint:
        towers["torch"] = TorchTower(Path(args.checkpoint))
    catalogue = Catalogue(
        items=recommender.items, item_vectors=recommender.item_vectors,
        users=None, user_vectors=recommender.user_vectors, known=recommender.known,
        test_users=np.arange(len(recommender.row_of_user)), user_tower=("none", {}),
    )
    manifest = recommender.manifest
    params = ExportParams(eval_users=args.queries, ef_search=manifest["ef_search"], hnsw_m=manifest["hnsw_m"],
                          ef_construction=manifest["ef_construction"])
    _, search = build_and_measure(catalogue, params)
    print(json.dumps({
        "items": len(recommender.items),
        "users": len(recommender.row_of_user),
        "served_index": args.index or recommender.health()["index"],
        "concurrency": args.concurrency,
        "service": service,
        "tower": tower_latency(towers, recommender, args.queries),
        "search": search,
    }, indent=2))


if __name__ == "__main__":
    main()
