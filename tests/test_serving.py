"""The CLI and the real HTTP service over an exported tiny model: same answers, as the evaluation ranks.

The service is started as users start it (`gamerec serve` on a free loopback port) and
queried over HTTP.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gamerec import ann, export
from gamerec.cli import parser
from gamerec.config import EvaluateParams
from gamerec.evaluation import load_eval_data, model_scorer
from gamerec.recommender import Recommender
from gamerec.retrieval import rank_holdout

GAMEREC = str(Path(sys.executable).parent / "gamerec")  # the console script pip installed
VERSION = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def models_dir(tiny_model, prepared, tmp_path_factory):
    """An export that knows users as the evaluation's test ranking does (train+val), flat index."""
    catalogue = export.embed(tiny_model, prepared, "train+val")
    folder = tmp_path_factory.mktemp("models")
    export.write_serving(folder, catalogue, ann.build(catalogue.item_vectors, "flat"),
                         {"model_version": VERSION, "sampler": "in_batch", "ef_search": 128, "hnsw_m": 32,
                          "ef_construction": 200, "known": "train+val"})
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(models_dir):
    port = free_port()
    proc = subprocess.Popen([GAMEREC, "serve", "--models", str(models_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"gamerec serve did not start: {proc.stdout.read()}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def get(url: str) -> tuple[int, dict, dict]:
    """(status, headers, JSON body), 4xx included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.load(exc)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GAMEREC, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def users(prepared_dir):
    return pd.read_parquet(prepared_dir / "users.parquet").set_index("user").user_id


def test_health_names_the_model_and_index(service):
    status, headers, body = get(service + "/health")
    assert status == 200 and body["status"] == "ok" and body["model_version"] == VERSION
    assert body["index"] == "flat" and body["items"] > 0 and body["users"] > 0
    assert headers["x-model-version"] == VERSION


def test_service_cli_and_library_give_the_same_answer(service, models_dir, users):
    user = users.iloc[5]
    _, _, served = get(f"{service}/recommend?user={user}&k=7")
    printed = cli("recommend", "--user", user, "-k", "7", "--json", "--models", str(models_dir))
    assert printed.returncode == 0, printed.stderr
    assert served == json.loads(printed.stdout) == Recommender(models_dir).recommend(user, 7)
    assert served["source"] == "model" and served["model_version"] == VERSION and len(served["items"]) == 7
    assert [item["rank"] for item in served["items"]] == list(range(1, 8))
    scores = [item["score"] for item in served["items"]]
    assert scores == sorted(scores, reverse=True)


def test_recommendations_leave_out_what_the_user_has(service, prepared_dir, users):
    interactions = pd.read_parquet(prepared_dir / "interactions.parquet")
    asin = pd.read_parquet(prepared_dir / "items.parquet").set_index("item").item_id
    for user in (1, 2, 3):
        have = set(asin[interactions.item[(interactions.user == user) & (interactions.split != "test")]])
        _, _, body = get(f"{service}/recommend?user={users[user]}&k=20")
        assert len(body["items"]) == 20 and not have & {item["asin"] for item in body["items"]}
        assert body["owned"] == len(have)


def assert_same_ranking(got: list[str], got_scores: list[float], want: list[str], want_scores: np.ndarray):
    """The same items in the same order, but for neighbours whose scores tie within float error."""
    assert np.allclose(got_scores, want_scores, atol=1e-5)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a == b or abs(got_scores[i] - want_scores[i]) < 1e-5, (i, got, want)


def test_service_ranks_what_the_evaluation_ranks_for_test_users(service, tiny_model, prepared, prepared_dir, users):
    data = load_eval_data(prepared, EvaluateParams())  # test users known by train+val, as exported
    embed_users, item_emb = model_scorer(tiny_model)
    test = data.test.holdout
    user_emb = embed_users(test.users, data.test.known)
    _, top = rank_holdout(test, user_emb, item_emb, 10, 512)
    asin = pd.read_parquet(prepared_dir / "items.parquet").set_index("item").item_id
    for row in range(0, len(test.users), max(1, len(test.users) // 40)):  # 40 users over HTTP
        _, _, body = get(f"{service}/recommend?user={users[int(test.users[row])]}&k=10")
        want_scores = (item_emb[top[row]] @ user_emb[row]).detach().numpy()
        assert_same_ranking([i["asin"] for i in body["items"]], [i["score"] for i in body["items"]],
                            list(asin[top[row].numpy()]), want_scores)


def test_unknown_user_gets_the_popularity_list_labelled(service, models_dir, prepared_dir):
    status, _, body = get(f"{service}/recommend?user=NOBODY&k=5")
    assert status == 200 and body["source"] == "popularity" and "not in the data" in body["note"]
    interactions = pd.read_parquet(prepared_dir / "interactions.parquet")
    known = interactions[interactions.split != "test"].item.value_counts()  # what this export knows
    assert [item["score"] for item in body["items"]] == list(known.iloc[:5].astype(float))
    printed = cli("recommend", "--user", "NOBODY", "-k", "3", "--models", str(models_dir))
    assert printed.returncode == 0 and printed.stdout.startswith("user 'NOBODY' is not in the data: the 3 most reviewed")


@pytest.mark.parametrize("query", ["recommend?user=A&k=0", "recommend?user=A&k=101", "recommend?user=A&k=abc",
                                   "recommend?k=3", "recommend?user=", "similar?k=3", "similar?item=X&k=-1"])
def test_bad_parameters_are_422_naming_the_parameter(service, query):
    status, headers, body = get(f"{service}/{query}")
    assert status == 422 and headers["x-model-version"] == VERSION
    assert body["detail"][0]["loc"][0] == "query" and body["detail"][0]["loc"][1] in ("user", "item", "k")


def test_unknown_item_is_404_on_the_service_and_one_line_on_the_cli(service, models_dir):
    status, _, body = get(f"{service}/similar?item=NOPE")
    assert status == 404 and body == {"detail": body["detail"], "model_version": VERSION}
    assert "item 'NOPE' is not in the catalogue" in body["detail"]
    printed = cli("similar", "--item", "NOPE", "--models", str(models_dir))
    assert printed.returncode == 1 and printed.stderr.strip().splitlines() == [f"error: {body['detail']}"]


def test_similar_returns_the_nearest_other_games(service, models_dir):
    recommender = Recommender(models_dir)
    asin = recommender.items.asin.iloc[3]
    status, _, body = get(f"{service}/similar?item={asin}&k=5")
    assert status == 200 and body["query"]["item"] == asin and len(body["items"]) == 5
    vectors = recommender.item_vectors
    scores = vectors @ vectors[3]
    scores[3] = -np.inf
    nearest = np.sort(scores)[::-1][:5]
    assert np.allclose([item["score"] for item in body["items"]], nearest, atol=1e-5)
    assert asin not in {item["asin"] for item in body["items"]}


def test_cli_table_and_k_bounds(models_dir, users):
    printed = cli("recommend", "--user", users.iloc[1], "-k", "3", "--models", str(models_dir))
    lines = printed.stdout.splitlines()
    assert printed.returncode == 0 and len(lines) == 4 and "that they do not have" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    bad = cli("recommend", "--user", "x", "-k", "500", "--models", str(models_dir))
    assert bad.returncode == 2 and "k = 500 is out of range; expected 1 to 100" in bad.stderr


def test_serve_binds_to_loopback_by_default_and_checks_the_folder_before_binding(tmp_path):
    assert parser().parse_args(["serve"]).host == "127.0.0.1"
    printed = cli("serve", "--models", str(tmp_path), "--port", str(free_port()))
    assert printed.returncode == 1 and "Traceback" not in printed.stderr
    assert printed.stderr.startswith(f"error: {tmp_path}: serving.json, items.parquet, users.parquet, users.npy, index.faiss not found")


def test_serving_benchmark_prints_rates_for_the_other_index(models_dir):
    bench = Path(__file__).resolve().parents[1] / "bench" / "serve.py"
    out = subprocess.run([sys.executable, str(bench), "--models", str(models_dir), "--index", "hnsw", "--requests", "60",
                          "--concurrency", "2", "--queries", "30"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["served_index"] == "hnsw" and report["service"]["errors"] == 0
    assert report["service"]["requests_per_second"] > 0 and report["service"]["p50_ms"] <= report["service"]["p99_ms"]
    assert report["search"]["flat"]["recall@10"] == 1.0 and report["search"]["query_users"] == 30
