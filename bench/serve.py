"""Benchmark of serving: the real `gamerec serve` over loopback, and exact versus ANN search.

    python bench/serve.py [--models models/serving] [--index flat|hnsw] [--requests 3000] [--concurrency 4] [--queries 1000]

1. Starts `gamerec serve` on a free 127.0.0.1 port (a separate process, as users run it),
   sends `--requests` GET /recommend?user=...&k=10 for users of the export, round robin,
   from `--concurrency` client threads on keep-alive connections, after a warm-up, and
   reports requests per second and p50/p99 latency as the client sees it. `--index` serves
   the other index kind than the export chose (built into a scratch copy of the folder).
2. In this process, builds a flat and an HNSW index over the exported item vectors and
   times `--queries` single-user queries of each (search + dropping the user's own games),
   with HNSW's recall@10 against the flat index.

Prints one JSON object. The loop is bounded and never leaves the machine. The client's
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
from gamerec.export import Catalogue, build_and_measure
from gamerec.recommender import Recommender

WARMUP = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(models: str, port: int) -> subprocess.Popen:
    gamerec = str(Path(sys.executable).parent / "gamerec")
    proc = subprocess.Popen([gamerec, "serve", "--models", models, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gamerec serve stopped: {proc.stderr.read()}")
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
    for name in ("items.parquet", "users.parquet", "users.npy", "serving.json"):
        (scratch / name).symlink_to(Path(models).resolve() / name)
    m = recommender.manifest
    faiss.write_index(ann.build(recommender.item_vectors, kind, m["hnsw_m"], m["ef_construction"]),
                      str(scratch / "index.faiss"))
    return str(scratch)


def load_test(port: int, paths: list[str], concurrency: int) -> tuple[np.ndarray, int, float]:
    """Send every path once from `concurrency` threads; (latencies in s, errors, wall seconds)."""
    latencies = np.zeros(len(paths))
    errors = [0] * concurrency

    def client(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(worker, len(paths), concurrency):
            start = time.perf_counter()
            conn.request("GET", paths[i])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models/serving", help="the export stage's folder (default: models/serving)")
    parser.add_argument("--index", choices=ann.KINDS, help="serve this index kind (default: the exported one)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--queries", type=int, default=1000, help="single-user queries timed per index kind")
    args = parser.parse_args()

    recommender = Recommender(args.models)
    user_ids = list(recommender.row_of_user)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(user_ids), WARMUP + args.requests)
    paths = [f"/recommend?user={user_ids[u]}&k=10" for u in picked]

    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        served = with_index(args.models, args.index, Path(scratch)) if args.index else args.models
        proc = start_service(served, port)
        try:
            load_test(port, paths[:WARMUP], args.concurrency)
            latencies, errors, seconds = load_test(port, paths[WARMUP:], args.concurrency)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ms = latencies * 1000

    catalogue = Catalogue(
        items=recommender.items, item_vectors=recommender.item_vectors,
        users=None, user_vectors=recommender.user_vectors, known=recommender.known,
        test_users=np.arange(len(user_ids)),
    )
    manifest = recommender.manifest
    params = ExportParams(eval_users=args.queries, ef_search=manifest["ef_search"], hnsw_m=manifest["hnsw_m"],
                          ef_construction=manifest["ef_construction"])
    _, search = build_and_measure(catalogue, params)
    print(json.dumps({
        "items": len(recommender.items),
        "users": len(user_ids),
        "served_index": args.index or recommender.health()["index"],
        "service": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "errors": errors,
            "seconds": round(seconds, 3),
            "requests_per_second": round(args.requests / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
        },
        "search": search,
    }, indent=2))


if __name__ == "__main__":
    main()
