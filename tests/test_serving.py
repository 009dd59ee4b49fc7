"""The CLI and the real HTTP service over exported tiny models.

Same answers as the evaluation ranks; a list of games embedded as the export embedded each
user; filters inside the search; batches; explanations; one typed error shape; reloading a
new export without a failed request. The service is started as users start it (`gamerec
serve` on a free loopback port) and queried over HTTP.
"""

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import typing
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from gamerec import ann, export
from gamerec.cli import parser
from gamerec.config import EvaluateParams, ModelParams
from gamerec.evaluation import load_eval_data, model_scorer
from gamerec.model import build
from gamerec.recommender import MAX_BATCH, MAX_ITEMS, NEEDS_NO_USER_ID, Recommender
from gamerec.retrieval import rank_holdout
from gamerec import tower
from gamerec.api import Health
from gamerec.tower import NumpyTower, TorchTower

GAMEREC = str(Path(sys.executable).parent / "gamerec")  # the console script pip installed
VERSION = "0123456789abcdef0123456789abcdef"
MANIFEST = {"model_version": VERSION, "sampler": "in_batch", "ef_search": 128, "hnsw_m": 32, "ef_construction": 200,
            "known": "train+val"}


# --- exports, a running service, HTTP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool_model(prepared):
    """The default kind of user tower (history only, a learned weight per recency rank, made unequal), with an MLP."""
    arch = ModelParams(dim=16, hidden=[12], temperature=0.1, history=5, user_id=False, pooling="recency")
    model = build(prepared, arch, seed=0).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.user_tower.recency)
    return model


def write_export(model, prepared, folder: Path, **manifest) -> Path:
    """An export that knows users as the evaluation's test ranking does (train+val), flat index."""
    catalogue = export.embed(model, prepared, "train+val")
    export.write_serving(folder, catalogue, ann.build(catalogue.item_vectors, "flat"), {**MANIFEST, **manifest})
    return folder


@pytest.fixture(scope="module")
def models_dir(pool_model, prepared, tmp_path_factory):
    return write_export(pool_model, prepared, tmp_path_factory.mktemp("models") / "serving")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(folder: Path, log: Path):
    """`gamerec serve` over `folder`, its stdout and stderr in `log`: yields (url, process)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([GAMEREC, "serve", "--models", str(folder), "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/v1/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"gamerec serve did not start: {log.read_text()}")
            time.sleep(0.2)
    try:
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served(models_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "serve.log"
    with running(models_dir, log) as (url, _):
        yield SimpleNamespace(url=url, log=log)


def request(url: str, body: dict | bytes | None = None) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a GET, or of a POST of `body`; 4xx included."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.load(exc)


def hammer(url: str, questions: list[tuple[str, dict | None]], stop: threading.Event, seen: list,
           pause: float = 0.0) -> None:
    """Ask `questions` (path, POST body or None) in turn until `stop`; record each (status, X-Model-Version)."""
    while not stop.is_set():
        for path, body in questions:
            status, headers, _ = request(url + path, body)
            seen.append((status, headers.get("x-model-version")))
            time.sleep(pause)


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GAMEREC, *args], capture_output=True, text=True, timeout=60, input=stdin)


@pytest.fixture(scope="module")
def users(prepared_dir):
    return pd.read_parquet(prepared_dir / "users.parquet").set_index("user").user_id


@pytest.fixture(scope="module")
def recommender(models_dir):
    return Recommender(models_dir)


def known_asins(recommender: Recommender, user: str) -> list[str]:
    """The user's games as the export knows them, oldest first."""
    row = recommender.row_of_user[user]
    indptr, indices = recommender.known
    return recommender.items.asin.to_numpy()[indices[indptr[row] : indptr[row + 1]]].tolist()


def of_platform(recommender: Recommender, n: int) -> tuple[str, list[str]]:
    """The most common platform and n of its games."""
    platform = recommender.items.platform[recommender.items.platform != ""].value_counts().index[0]
    return platform, recommender.items.asin[recommender.items.platform == platform].iloc[:n].tolist()


# --- answers ----------------------------------------------------------------------------------------------------------


def test_health_names_the_model_index_tower_and_platforms(served, prepared_dir):
    status, headers, body = request(served.url + "/v1/health")
    assert status == 200 and body["status"] == "ok" and body["model_version"] == VERSION
    assert body["index"] == "flat" and body["items"] > 0 and body["users"] > 0 and body["user_tower"] == "numpy"
    assert body["platforms"] == ["Nintendo Switch", "PlayStation 4", "Xbox One"]  # the synthetic data's, of 3
    assert headers["x-model-version"] == VERSION


def test_health_can_name_every_tower_kind_export_writes():
    kinds = typing.get_args(Health.model_fields["user_tower"].annotation)
    assert set(kinds) == set(tower.FILES) | {"none"}  # a kind the schema lacks would make /v1/health a 500


def test_service_cli_and_library_give_the_same_answer(served, models_dir, recommender, users):
    user = users.iloc[5]
    for query, args, call in (
        (f"user={user}&k=7", ["--user", user], dict(user=user)),
        (f"items={','.join(known_asins(recommender, user)[:3])}&k=7&max_price=30",
         ["--items", ",".join(known_asins(recommender, user)[:3]), "--max-price", "30"],
         dict(items=known_asins(recommender, user)[:3], max_price=30.0)),
    ):
        _, _, answer = request(f"{served.url}/v1/recommend?{query}")
        printed = cli("recommend", *args, "-k", "7", "--json", "--models", str(models_dir))
        assert printed.returncode == 0, printed.stderr
        assert answer == json.loads(printed.stdout) == recommender.recommend(k=7, **call)
        assert answer["source"] == "model" and answer["model_version"] == VERSION and len(answer["items"]) == 7
        assert [item["rank"] for item in answer["items"]] == list(range(1, 8))
        scores = [item["score"] for item in answer["items"]]
        assert scores == sorted(scores, reverse=True)


def test_recommendations_leave_out_what_the_user_has(served, prepared_dir, users):
    interactions = pd.read_parquet(prepared_dir / "interactions.parquet")
    asin = pd.read_parquet(prepared_dir / "items.parquet").set_index("item").item_id
    for user in (1, 2, 3):
        have = set(asin[interactions.item[(interactions.user == user) & (interactions.split != "test")]])
        _, _, body = request(f"{served.url}/v1/recommend?user={users[user]}&k=20")
        assert len(body["items"]) == 20 and not have & {item["asin"] for item in body["items"]}
        assert body["owned"] == len(have)


def assert_same_ranking(got: list[str], got_scores: list[float], want: list[str], want_scores: np.ndarray):
    """The same items in the same order, but for neighbours whose scores tie within float error."""
    assert np.allclose(got_scores, want_scores, atol=1e-5)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a == b or abs(got_scores[i] - want_scores[i]) < 1e-5, (i, got, want)


def test_service_ranks_what_the_evaluation_ranks_for_test_users(served, pool_model, prepared, prepared_dir, users):
    data = load_eval_data(prepared, EvaluateParams())  # test users known by train+val, as exported
    embed_users, item_emb = model_scorer(pool_model)
    test = data.test.holdout
    user_emb = embed_users(test.users, data.test.known)
    _, top = rank_holdout(test, user_emb, item_emb, 10, 512)
    asin = pd.read_parquet(prepared_dir / "items.parquet").set_index("item").item_id
    for row in range(0, len(test.users), max(1, len(test.users) // 40)):  # 40 users over HTTP
        _, _, body = request(f"{served.url}/v1/recommend?user={users[int(test.users[row])]}&k=10")
        want_scores = (item_emb[top[row]] @ user_emb[row]).detach().numpy()
        assert_same_ranking([i["asin"] for i in body["items"]], [i["score"] for i in body["items"]],
                            list(asin[top[row].numpy()]), want_scores)


def test_the_user_tower_embeds_each_known_history_as_the_export_did(served, recommender, users):
    assert isinstance(recommender.tower, NumpyTower)
    vectors = recommender.tower.embed(recommender.known)  # every user's export.known history, oldest first
    assert np.abs(vectors - recommender.user_vectors).max() < 1e-5
    for user in users.iloc[1:6]:  # over HTTP: a user's games as a list are that user
        _, _, by_user = request(f"{served.url}/v1/recommend?user={user}&k=10")
        _, _, by_list = request(f"{served.url}/v1/recommend?items={','.join(known_asins(recommender, user))}&k=10")
        assert [i["asin"] for i in by_list["items"]] == [i["asin"] for i in by_user["items"]]
        assert np.allclose([i["score"] for i in by_list["items"]], [i["score"] for i in by_user["items"]], atol=1e-5)
        assert by_list["owned"] == by_user["owned"] and by_list["query"]["items"] == known_asins(recommender, user)


LAZY = """
import json, sys
import gamerec.cli, gamerec.service
from gamerec.recommender import Recommender
r = Recommender(sys.argv[1])
before = "torch" in sys.modules
r.recommend(items=sys.argv[2].split(","), k=3)
print(json.dumps([before, "torch" in sys.modules]))
"""


def test_a_tower_numpy_cannot_run_is_the_checkpoint_with_pytorch_loaded_on_first_use(
        pool_model, prepared, models_dir, recommender, users, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "NUMPY_TOWERS", {})  # as for a tower NumPy cannot run
    fallback = Recommender(write_export(pool_model, prepared, tmp_path / "serving"))
    assert isinstance(fallback.tower, TorchTower) and fallback.health()["user_tower"] == "torch"
    assert np.abs(fallback.tower.embed(fallback.known) - fallback.user_vectors).max() < 1e-5
    games = known_asins(recommender, users.iloc[2])
    want, got = recommender.recommend(items=games), fallback.recommend(items=games)
    assert [i["asin"] for i in got["items"]] == [i["asin"] for i in want["items"]]
    assert np.allclose([i["score"] for i in got["items"]], [i["score"] for i in want["items"]], atol=1e-5)
    for folder, loads_torch in ((models_dir, False), (tmp_path / "serving", True)):
        out = subprocess.run([sys.executable, "-c", LAZY, str(folder), ",".join(games)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [False, loads_torch]  # never at import; only the fallback, when asked


def test_a_tower_that_embeds_the_user_id_refuses_lists_in_one_line(tiny_model, prepared, recommender, tmp_path):
    folder = write_export(tiny_model, prepared, tmp_path / "serving")  # model.user_id: true
    asin = recommender.items.asin.iloc[0]
    assert Recommender(folder).health()["user_tower"] == "none" and not list(folder.glob("user_tower.*"))
    printed = cli("recommend", "--items", asin, "--models", str(folder))
    assert printed.returncode == 1 and printed.stderr.splitlines() == [f"error: {NEEDS_NO_USER_ID}"]
    with running(folder, tmp_path / "serve.log") as (url, _):
        status, _, body = request(f"{url}/v1/recommend?items={asin}")
        assert (status, body) == (422, {"detail": NEEDS_NO_USER_ID, "model_version": VERSION})
        assert request(f"{url}/v1/recommend?user=ANYONE")[0] == 200


def brute_force(recommender: Recommender, vector: np.ndarray, exclude: list[str], allowed: np.ndarray, k: int):
    scores = recommender.item_vectors @ vector
    scores[~allowed | recommender.items.asin.isin(exclude).to_numpy()] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return recommender.items.asin.to_numpy()[order[np.isfinite(scores[order])]].tolist()


def test_filters_keep_only_their_games_inside_the_search(served, recommender, users):
    user = users.iloc[4]
    platform, _ = of_platform(recommender, 0)
    brand = recommender.items.brand[recommender.items.brand != ""].value_counts().index[0]
    items, price = recommender.items, recommender.items.price.to_numpy()
    other = items.asin.iloc[:3].tolist()
    for query, allowed in (
        (f"platform={platform.lower()}", (items.platform == platform).to_numpy()),  # any case
        (f"brand={brand}", (items.brand == brand).to_numpy()),
        ("min_price=10&max_price=25", (price >= 10) & (price <= 25)),  # no price: no game of a price range
        (f"platform={platform}&max_price=20&exclude={','.join(other)}", (items.platform == platform).to_numpy()
         & (price <= 20)),
    ):
        _, _, body = request(f"{served.url}/v1/recommend?user={user}&k=10&{query}".replace(" ", "%20"))
        got = [i["asin"] for i in body["items"]]
        exclude = known_asins(recommender, user) + (other if "exclude" in query else [])
        assert got == brute_force(recommender, recommender.user_vectors[recommender.row_of_user[user]], exclude,
                                  allowed, 10)
        assert len(got) == min(10, int((allowed & ~items.asin.isin(exclude).to_numpy()).sum()))


def test_three_games_of_a_platform_get_ten_of_that_platform_each_with_its_because(models_dir, recommender):
    platform, games = of_platform(recommender, 3)
    printed = cli("recommend", "--items", ",".join(games), "--platform", platform, "-k", "10", "--models",
                  str(models_dir))
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].startswith(f"10 games to play after the 3 given ({platform})")
    rows, reasons = lines[1::2], lines[2::2]
    assert len(rows) == len(reasons) == 10
    asins = [row.split()[1] for row in rows]
    platform_of = recommender.items.set_index("asin").platform
    assert len(set(asins)) == 10 and not set(asins) & set(games) and set(platform_of[asins]) == {platform}
    assert all(re.fullmatch(rf"\s+because you played ({'|'.join(games)}) .+ \(similarity -?\d\.\d\d\)", r)
               for r in reasons)


def test_each_game_is_explained_by_the_nearest_game_of_the_history(recommender, users):
    for answer, history in ((recommender.recommend(users.iloc[3], 10), known_asins(recommender, users.iloc[3])),
                            (recommender.recommend(items=known_asins(recommender, users.iloc[7])[:4], k=10),
                             known_asins(recommender, users.iloc[7])[:4])):
        rows = [recommender.row_of_item[asin] for asin in history]
        for item in answer["items"]:
            similarity = recommender.item_vectors[rows] @ recommender.item_vectors[recommender.row_of_item[item["asin"]]]
            assert item["because"]["asin"] == history[int(similarity.argmax())]
            assert item["because"]["similarity"] == pytest.approx(float(similarity.max()), abs=1e-6)


def test_unknown_user_gets_the_popularity_list_labelled(served, models_dir, prepared_dir, recommender):
    status, _, body = request(f"{served.url}/v1/recommend?user=NOBODY&k=5")
    assert status == 200 and body["source"] == "popularity" and "not in the data" in body["note"]
    interactions = pd.read_parquet(prepared_dir / "interactions.parquet")
    known = interactions[interactions.split != "test"].item.value_counts()  # what this export knows
    assert [item["score"] for item in body["items"]] == list(known.iloc[:5].astype(float))
    assert all(item["because"] is None for item in body["items"])
    platform, _ = of_platform(recommender, 0)
    _, _, filtered = request(f"{served.url}/v1/recommend?user=NOBODY&k=5&platform={platform}".replace(" ", "%20"))
    assert {item["platform"] for item in filtered["items"]} == {platform} and len(filtered["items"]) == 5
    printed = cli("recommend", "--user", "NOBODY", "-k", "3", "--models", str(models_dir))
    assert printed.returncode == 0 and printed.stdout.startswith("user 'NOBODY' is not in the data: the 3 most reviewed")


def test_a_batch_answers_as_the_single_questions_do(served, models_dir, recommender, users):
    platform, games = of_platform(recommender, 2)
    questions = [{"user": users.iloc[1], "k": 3}, {"items": games, "k": 4, "platform": platform},
                 {"user": "NOBODY", "k": 2, "exclude": games}]
    status, _, body = request(served.url + "/v1/recommend", {"queries": questions})
    assert status == 200 and body["model_version"] == VERSION
    assert body["answers"] == [recommender.recommend(**question) for question in questions]
    printed = cli("recommend", "--users-file", "-", "-k", "3", "--models", str(models_dir),
                  stdin=f"{users.iloc[1]}\n\n{users.iloc[2]}\nNOBODY\n")
    assert printed.returncode == 0, printed.stderr
    assert [json.loads(line) for line in printed.stdout.splitlines()] == [
        recommender.recommend(user, 3) for user in (users.iloc[1], users.iloc[2], "NOBODY")]


def test_a_users_file_that_cannot_be_read_is_one_line(models_dir, tmp_path):
    (tmp_path / "binary.txt").write_bytes(b"A1\xff\xfe\n")
    for path, says in ((tmp_path / "binary.txt", "not UTF-8 text"), (tmp_path / "absent.txt", "cannot read it")):
        printed = cli("recommend", "--users-file", str(path), "--models", str(models_dir))
        lines = printed.stderr.splitlines()
        assert printed.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: --users-file {path}: {says}")


# --- bad input: one error shape, a clear 4xx, never a 500 ------------------------------------------------------------


def _many(n: int) -> str:
    return ",".join(f"B{i:09d}" for i in range(n))


BAD = [  # (path or (path, POST body), status, the error's detail contains)
    ("/v1/recommend?items=", 422, "items: no games given; expected 1 to 1000 ASINs, oldest first"),
    ("/v1/recommend?items=NOPE,{a}", 404, "items 'NOPE' is not in the catalogue"),
    ("/v1/recommend?items={a},{a}", 422, "is given more than once"),
    ("/v1/recommend?items=" + _many(10_000), 422, "items: Value should have at most 1000 items"),
    (("/v1/recommend", {"queries": [{"items": _many(10_000).split(",")}]}), 422, "queries.0.items: Value should have at most"),
    ("/v1/recommend?user=A&platform=PS9", 422, "platform 'PS9' is not in the catalogue"),
    ("/v1/recommend?user=A&brand=Nova%20Gmes", 422, "did you mean 'Nova Games'"),
    ("/v1/recommend?user=A&min_price=30&max_price=10", 422, "expected 0 <= min_price <= max_price"),
    ("/v1/recommend?user=A&min_price=-1", 422, "min_price: Input should be greater than or equal to 0"),
    ("/v1/recommend?user=A&max_price=cheap", 422, "max_price: Input should be a valid number"),
    ("/v1/recommend?user=A&platfrom=PC", 422, "platfrom: Extra inputs are not permitted"),
    ("/v1/recommend?user=A&exclude=NOPE", 404, "exclude 'NOPE' is not in the catalogue"),
    ("/v1/recommend?user=A&items={a}", 422, "give either a user or a list of items, not both or neither"),
    ("/v1/recommend?k=3", 422, "give either a user or a list of items"),
    ("/v1/recommend?user=A&k=0", 422, "k: Input should be greater than or equal to 1"),
    ("/v1/recommend?user=A&k=101", 422, "k: Input should be less than or equal to 100"),
    ("/v1/recommend?user=A&k=abc", 422, "k: Input should be a valid integer"),
    ("/v1/recommend?user=", 422, "user: String should have at least 1 character"),
    ("/v1/similar?k=3", 422, "item: Field required"),
    ("/v1/similar?item=X&k=-1", 422, "k: Input should be greater than or equal to 1"),
    (("/v1/recommend", {"queries": [{"user": "A"}] * (MAX_BATCH + 1)}), 422, "queries: List should have at most 1000"),
    (("/v1/recommend", {"queries": []}), 422, "queries: List should have at least 1 item"),
    (("/v1/recommend", {"queries": [{"user": "A"}, {"items": ["NOPE"]}]}), 404, "queries.1: items 'NOPE' is not in"),
    (("/v1/recommend", {"queries": [{"items": [1, 2]}]}), 422, "queries.0.items.0: Input should be a valid string"),
    (("/v1/recommend", b"{not json"), 422, "body: JSON decode error"),
    ("/recommend?user=A", 404, "Not Found"),  # the unprefixed routes are gone
]


@pytest.mark.parametrize("path, status, detail", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_one_line_and_a_clear_4xx(served, recommender, path, status, detail):
    a = recommender.items.asin.iloc[0]
    path, body = (path, None) if isinstance(path, str) else path
    got, headers, answer = request(served.url + path.format(a=a), body)
    assert (got, answer["model_version"], headers["x-model-version"]) == (status, VERSION, VERSION)
    assert set(answer) == {"detail", "model_version"} and detail in answer["detail"] and "\n" not in answer["detail"]


def test_a_body_over_the_limit_is_413_before_it_is_read(served):
    conn = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=30)
    conn.putrequest("POST", "/v1/recommend")  # headers only, as a client that waits for 100-continue
    for name, value in (("content-type", "application/json"), ("content-length", str(9 << 20))):
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and response.getheader("x-model-version") == VERSION
    assert json.load(response) == {"detail": f"request body of {9 << 20} bytes; at most {8 << 20}: split the batch",
                                   "model_version": VERSION}
    conn.close()


def test_unknown_item_is_404_on_the_service_and_one_line_on_the_cli(served, models_dir):
    status, _, body = request(f"{served.url}/v1/similar?item=NOPE")
    assert status == 404 and body == {"detail": body["detail"], "model_version": VERSION}
    assert "item 'NOPE' is not in the catalogue" in body["detail"]
    printed = cli("similar", "--item", "NOPE", "--models", str(models_dir))
    assert printed.returncode == 1 and printed.stderr.strip().splitlines() == [f"error: {body['detail']}"]


def test_similar_returns_the_nearest_other_games(served, recommender):
    asin = recommender.items.asin.iloc[3]
    status, _, body = request(f"{served.url}/v1/similar?item={asin}&k=5")
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
    assert printed.returncode == 0 and len(lines) == 7 and "that they do not have" in lines[0]
    assert [line.split()[0] for line in lines[1::2]] == ["1", "2", "3"]
    assert all(line.strip().startswith("because you played") for line in lines[2::2])
    bad = cli("recommend", "--user", "x", "-k", "500", "--models", str(models_dir))
    assert bad.returncode == 2 and "k = 500 is out of range; expected 1 to 100" in bad.stderr
    both = cli("recommend", "--user", "x", "--items", "y", "--models", str(models_dir))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_a_reader_that_stops_early_ends_the_cli_without_a_traceback(models_dir, users):
    # `gamerec recommend ... | head -1`: the pipe closes after the first line
    piped = subprocess.run(f"'{GAMEREC}' recommend --user {users.iloc[1]} -k 50 --models '{models_dir}' | head -1",
                           shell=True, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 1 and "Traceback" not in piped.stderr


def test_the_openapi_schema_is_typed_and_documents_the_errors(served):
    _, _, schema = request(served.url + "/openapi.json")
    text = json.dumps(schema)
    assert '"additionalProperties": true' not in text and "HTTPValidationError" not in text
    assert set(schema["paths"]) == {"/v1/health", "/v1/recommend", "/v1/similar"}
    error = {"$ref": "#/components/schemas/Error"}
    for path, answer in (("/v1/recommend", "Answer"), ("/v1/similar", "SimilarAnswer")):
        responses = schema["paths"][path]["get"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{answer}"}
        assert all(responses[s]["content"]["application/json"]["schema"] == error for s in ("404", "422"))
    post = schema["paths"]["/v1/recommend"]["post"]["responses"]
    assert {"200", "404", "413", "422"} <= set(post)
    assert schema["components"]["schemas"]["Batch"]["properties"]["queries"]["maxItems"] == MAX_BATCH
    game = schema["components"]["schemas"]["Game"]["properties"]
    assert {"platform", "because", "score"} <= set(game)
    items = schema["components"]["schemas"]["Question"]["properties"]["items"]["anyOf"][0]
    assert items["maxItems"] == MAX_ITEMS


def test_each_request_leaves_one_access_line(served):
    request(served.url + "/v1/health?")
    request(served.url + "/v1/recommend?user=A&k=0")
    time.sleep(0.2)
    lines = served.log.read_text().splitlines()
    assert re.fullmatch(r"GET /v1/health 200 \d+\.\d ms", lines[-2]), lines[-2:]
    assert re.fullmatch(r"GET /v1/recommend 422 \d+\.\d ms", lines[-1]), lines[-2:]


def test_serve_binds_to_loopback_by_default_and_checks_the_folder_before_binding(tmp_path):
    assert parser().parse_args(["serve"]).host == "127.0.0.1"
    printed = cli("serve", "--models", str(tmp_path), "--port", str(free_port()))
    assert printed.returncode == 1 and "Traceback" not in printed.stderr
    assert printed.stderr.startswith(f"error: {tmp_path}: serving.json, items.parquet, users.parquet, users.npy, index.faiss not found")


# --- a new export while serving ---------------------------------------------------------------------------------------


def test_a_new_export_is_swapped_in_while_answering_and_sighup_reloads(pool_model, prepared, recommender, users,
                                                                        tmp_path):
    folder = write_export(pool_model, prepared, tmp_path / "serving")
    games = ",".join(known_asins(recommender, users.iloc[1])[:3])
    questions = [(f"/v1/recommend?user={users.iloc[1]}", None), (f"/v1/recommend?items={games}", None),
                 ("/v1/recommend", {"queries": [{"user": users.iloc[2]}, {"items": games.split(",")}]})]
    stop, seen = threading.Event(), []
    with running(folder, tmp_path / "serve.log") as (url, proc):
        client = threading.Thread(target=hammer, args=(url, questions, stop, seen))
        client.start()
        try:
            time.sleep(0.5)
            write_export(pool_model, prepared, folder, model_version="f" * 32)  # renamed into place, as export does
            deadline = time.monotonic() + 30
            while (not seen or seen[-1][1] != "f" * 32) and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.send_signal(signal.SIGHUP)  # reload at once, changed or not
            time.sleep(1.5)
        finally:
            stop.set()
            client.join()
    versions = [version for _, version in seen]
    assert {status for status, _ in seen} == {200}
    assert versions[0] == VERSION and versions[-1] == "f" * 32
    assert versions == [VERSION] * versions.count(VERSION) + ["f" * 32] * versions.count("f" * 32)  # never back
    log = (tmp_path / "serve.log").read_text()
    assert f"now serving model {'f' * 12} (was {VERSION[:12]})" in log and f"now serving model {'f' * 12} (was {'f' * 12})" in log


def test_serving_benchmark_prints_rates_for_the_three_kinds_and_the_other_index(models_dir):
    bench = Path(__file__).resolve().parents[1] / "bench" / "serve.py"
    out = subprocess.run([sys.executable, str(bench), "--models", str(models_dir), "--index", "hnsw", "--requests", "60",
                          "--batches", "3", "--concurrency", "2", "--queries", "30"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["served_index"] == "hnsw" and set(report["service"]) == {"user", "items", "batch"}
    for kind in report["service"].values():
        assert kind["errors"] == 0 and kind["requests_per_second"] > 0 and kind["p50_ms"] <= kind["p99_ms"]
    assert report["service"]["batch"]["requests"] == 3 and report["service"]["items"]["requests"] == 60
    assert set(report["tower"]) == {"exported (numpy)"}
    assert report["search"]["flat"]["recall@10"] == 1.0 and report["search"]["query_users"] == 30
