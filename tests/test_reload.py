"""End to end: `dvc repro` with a changed param while `gamerec serve` answers; the new model is served, no request fails."""

import json
import threading
import time

import pytest

from gamerec.recommender import Recommender
from conftest import copy_repo
from test_pipeline import dvc, edit_params
from test_serving import hammer, running

pytestmark = pytest.mark.e2e


def served_version(repo) -> str:
    return json.loads((repo / "models/serving/serving.json").read_text())["model_version"]


def test_a_repro_with_a_changed_param_is_served_without_a_failed_request(tmp_path, tiny_repo):
    repo = copy_repo(tiny_repo, tmp_path)
    old = served_version(repo)
    recommender = Recommender(repo / "models/serving")
    user = next(iter(recommender.row_of_user))
    games = recommender.items.asin.iloc[:3].tolist()
    questions = [(f"/v1/recommend?user={user}", None), (f"/v1/recommend?items={','.join(games)}", None),
                 ("/v1/recommend", {"queries": [{"user": user}, {"items": games}] * 50})]  # a batch of 100
    stop, seen = threading.Event(), []
    with running(repo / "models/serving", tmp_path / "serve.log") as (url, _):
        client = threading.Thread(target=hammer, args=(url, questions, stop, seen, 0.02))  # leaves the cores to dvc
        client.start()
        try:
            edit_params(repo, train={"lr": 0.05})
            second = dvc(repo, "repro")  # train, evaluate and export run again; export renames its folder into place
            new = served_version(repo)
            deadline = time.monotonic() + 60
            while seen[-1][1] != new and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # and keeps answering on it
        finally:
            stop.set()
            client.join()
    assert second.returncode == 0 and "Running stage 'export'" in second.stdout, second.stdout + second.stderr
    versions = [version for _, version in seen]
    assert new != old and versions[0] == old and versions[-1] == new
    assert versions == [old] * versions.count(old) + [new] * versions.count(new)  # swapped once, never back
    assert {status for status, _ in seen} == {200}, [s for s in seen if s[0] != 200][:5]
    assert f"now serving model {new[:12]} (was {old[:12]})" in (tmp_path / "serve.log").read_text()
