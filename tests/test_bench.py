"""The benchmark's references and its report: the per-row loop must train the same model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import torch
from torch.utils.data import DataLoader

from gamerec import model as models
from gamerec.config import ModelParams, TrainParams
from gamerec.model import ModelConfig
from gamerec.samplers import sample
from gamerec.training import Examples, batch_loss, loss_for

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import cells  # noqa: E402
import growth  # noqa: E402
import naive  # noqa: E402


@pytest.mark.parametrize("sampler", ["out_batch", "in_batch", "also_view", "mined"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("item_tower", ["features", "id_plus_features", "id"])
def test_the_per_row_loop_computes_the_same_loss(prepared, sampler, causal, item_tower):
    negatives = sample(sampler, prepared.train_positives())
    ex = Examples.from_frame(negatives.examples, negatives.manifest)
    # dropout 0.1 and temperature 0.1: the defaults this test was written for (no hidden layer: no dropout)
    arch = ModelParams(dim=16, hidden=[], dropout=0.1, temperature=0.1, history=5, user_id=False, causal=causal,
                       pooling="recency", item_tower=item_tower)
    model = models.build(prepared, arch, seed=0)
    torch.nn.init.normal_(model.user_tower.recency)  # unequal recency weights, so the window order matters
    idx = torch.randperm(len(ex), generator=torch.Generator().manual_seed(1))[:64]
    params = TrainParams()
    dataset = naive.PerRowExamples(ex, prepared.item_features(), prepared.history(), arch)
    batch = next(iter(DataLoader(torch.utils.data.Subset(dataset, idx.tolist()), batch_size=64,
                                 collate_fn=naive.pad_collate)))
    assert batch["description"].shape[:2] == (64, 1 + ex.negatives.shape[1]) and batch["history"].shape == (64, 5)
    expected = batch_loss(model, loss_for(ex, model, params, torch.Generator()), ex, idx)
    got = naive.naive_loss(model, batch, params, ex.loss, ex.items_of_users())
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_flop_count_by_hand():
    cfg = ModelConfig(10, 10, 2, 5, arch=ModelParams(dim=4, hidden=[], history=3, user_id=False))
    # item: 2 tokens x 4 + price 16 + mlp 2*16*4 + norm 12 = 164; user (once): 2*3*4 + 2*4*4 + 12 = 68
    assert cfg.flops_per_positive("bce", 8, 4.0, 2.0, 10.0) == 3 * (68 + 5 * 164 + 5 * 8)  # 5 dot products
    assert cfg.flops_per_positive("sampled_softmax", 8, 4.0, 2.0, 10.0) == 3 * (68 + 5 * 164 + 5 * 13)
    assert cfg.flops_per_positive("batch_softmax", 8, 0.0, 2.0, 10.0) == 3 * (68 + 164 + 8 * 13)
    # the catalogue of 10 items through the item tower once per batch of 8, and 10 logits
    assert cfg.flops_per_positive("exact_softmax", 8, 0.0, 2.0, 10.0) == 3 * (68 + (1 + 10 / 8) * 164 + 10 * 13)
    # an id-only item tower looks its row up: normalising (12) is all it computes
    ids = ModelConfig(10, 10, 2, 5, arch=ModelParams(dim=4, hidden=[], history=3, user_id=False, item_tower="id"))
    assert ids.flops_per_positive("bce", 8, 4.0, 2.0, 10.0) == 3 * (68 + 5 * 12 + 5 * 8)
    # the id plus a layer over the rest: 2 tokens x 4 + price 16 + mlp 2*12*4 + the sum 4 + norm 12 = 136
    plus = ModelConfig(10, 10, 2, 5, arch=ModelParams(dim=4, hidden=[], history=3, user_id=False,
                                                      item_tower="id_plus_features"))
    assert plus.flops_per_positive("bce", 8, 4.0, 2.0, 10.0) == 3 * (68 + 5 * 136 + 5 * 8)
    # attention, one token per positive: its item (164 - norm 12 = 152), two sasrec blocks (no output
    # layer) of 8*16 projections + 4*4*16 feed-forward + 4*4*2 attention (a window of min(10 + 1, 3) = 3
    # tokens: 2 keys a query on average) = 416 each, norm 12: 152 + 832 + 12 = 996
    attention = ModelConfig(10, 10, 2, 5, arch=ModelParams(dim=4, hidden=[], history=3, user_id=False, heads=2,
                                                           layers=2, block="sasrec", user_tower="attention"))
    assert attention.flops_per_positive("bce", 8, 4.0, 2.0, 10.0) == 3 * (996 + 5 * 164 + 5 * 8)


@pytest.mark.e2e
@pytest.mark.parametrize("user_tower", ["pool", "attention"])
def test_bench_reports_every_step(tmp_path, user_tower):
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--size", "tiny", "--naive-batches", "2",
                          "--set", f"model.user_tower={user_tower}", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    steps = report["steps"]
    expected = ["synthesize", "prepare", *(f"sample_negatives@{s}" for s in ("out_batch", "also_view", "in_batch")),
                *(f"train@{s}" for s in ("out_batch", "also_view", "in_batch")), "evaluate", "export"]
    assert list(steps) == expected
    for name, step in steps.items():
        assert step["seconds"] > 0 and 0.01 < step["peak_rss_gib"] < 8, name
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["model"]["user_tower"] == user_tower
    for s in ("out_batch", "also_view", "in_batch"):
        train = steps[f"train@{s}"]
        if user_tower == "attention":  # it trains on sequences: no per-row reference, and the report says so
            assert "per_row_positives_per_second" not in train and train["per_row_reference"].startswith("none")
            continue
        ratio = train["positives_per_second"] / train["per_row_positives_per_second"]
        assert train["speedup_vs_per_row"] == pytest.approx(ratio, abs=0.051)  # printed to one decimal
    assert steps["evaluate"]["users_ranked"] == report["data"]["users"]
    assert 0 < steps["evaluate"]["fraction_of_matmul"] and report["machine"]["matmul_gflops"] > 0
    assert steps["export"]["hnsw_recall@10"] >= 0.9 and steps["export"]["served_index"] == "flat"
    assert report["pipeline_seconds"] < report["all_steps_seconds"]
    (tmp_path / "tiny.json").write_text(out.stdout)
    table = subprocess.run([sys.executable, str(BENCH / "table.py"), str(tmp_path / "tiny.json")],
                           capture_output=True, text=True, check=True).stdout
    assert "| train@in_batch | " in table and "| tiny | out_batch | " in table
    if user_tower == "attention":  # no per-row loop, so no speedup
        assert "| tiny | in_batch | " in table and "| n/a | n/a |" in table
    precision = subprocess.run([sys.executable, str(BENCH / "precision.py"), "--workdir", str(tmp_path),
                                "--users", "100", "--band-users", "50"], capture_output=True, text=True, timeout=300)
    assert precision.returncode == 0, precision.stderr[-2000:]
    checked = json.loads(precision.stdout)  # both precisions are exact: the same ranks and top lists
    assert checked["identical"] and checked["users"] == 100 and checked["bfloat16_us_per_user"] > 0
    assert 0 <= checked["bfloat16_band"]["share_of_users_crowded"] <= 1


def test_bench_names_a_param_it_cannot_set(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--size", "tiny", "--set", "model.tower=pool",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "bench: --set model.tower=pool: expected KEY=VALUE with KEY a param of params.yaml"]


def test_cells_tests_each_chosen_point_once_with_the_fixed_params(monkeypatch):
    done = {"revs": [{"rev": "a" * 8, "name": "pool-inbatch-batchsoftmax-1", "data": {}}], "name": "x"}
    monkeypatch.setattr(cells.experiments, "show", lambda: [{"rev": "abc", "name": "main", "experiments": [done]}])
    queued = []
    monkeypatch.setattr(cells.tuning, "queue", lambda name, points, sets, target: queued.append((name, sets, target)))
    runs = []
    monkeypatch.setattr(cells.tuning, "run_queue", lambda jobs, budget: runs.append(jobs))
    best = {("in_batch", "batch_softmax"): {"model.temperature": 0.15, "train.lr": 0.02},
            ("also_view", "bce"): {"model.temperature": 0.2, "train.lr": 0.005}}
    cells.test_cells("pool", {"model.user_tower": "pool"}, best, jobs=2, budget=10)
    # the in_batch cell ran already (an interrupted run); the other runs every stage (no target) at its own point
    assert queued == [("pool-alsoview-bce", {"model.user_tower": "pool", "sampler": "also_view", "train.loss": "bce",
                                             "model.temperature": 0.2, "train.lr": 0.005}, None)]
    assert runs == [2]
    cells.test_cells("pool", {}, {("in_batch", "batch_softmax"): {}}, jobs=2, budget=10)
    assert runs == [2]  # nothing left to run: the queue (perhaps busy with other work) is not waited for


def test_cells_names_a_malformed_set():
    out = subprocess.run([sys.executable, str(BENCH / "cells.py"), "--data", "synthetic", "--set", "train.lr"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip() == "cells: --set 'train.lr': expected KEY=VALUE, as dvc exp run -S"


def _report(size: str, scale: float) -> dict:
    """A bench/run.py report whose every step takes 2 s per 1k interactions and whose ranking is users x items."""
    n, users, items = 1000 * scale, 100 * scale, 10 * scale
    steps = {name: {"seconds": 2 * scale, "peak_rss_gib": 0.5 * scale**0.5} for name in growth.PIPELINE}
    steps["evaluate"].update(ranking_seconds=1e-3 * users * items, users_ranked=users, catalogue_items=items)
    return {"size": size, "data": {"interactions": n, "users": users, "items": items}, "steps": steps,
            "pipeline_seconds": 2 * scale * len(growth.PIPELINE), "pipeline_peak_rss_gib": 0.5 * scale**0.5}


def test_growth_fits_the_exponent_of_each_step_by_hand():
    assert growth.exponent([1, 10, 100], [3, 3 * 10**1.5, 3 * 100**1.5]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="two distinct sizes"):
        growth.exponent([5, 5], [1, 2])
    result = growth.growth([_report("4x", 4), _report("1x", 1), _report("2x", 2)])  # sorted by size
    assert result["sizes"] == ["1x", "2x", "4x"]
    for name in growth.PIPELINE:
        assert result["steps"][name]["seconds_exponent"] == pytest.approx(1.0)
        assert result["steps"][name]["peak_exponent"] == pytest.approx(0.5)
    ranking = result["steps"]["ranking"]  # users and items both grow: quadratic in the data, linear in the work
    assert ranking["seconds_exponent"] == pytest.approx(2.0) and ranking["exponent_in_users_x_items"] == pytest.approx(1.0)
    assert result["steps"]["whole pipeline"]["seconds"] == [2 * len(growth.PIPELINE) * s for s in (1, 2, 4)]


def test_growth_writes_its_table_plot_and_json_from_reports(tmp_path):
    paths = []
    for size, scale in (("1x", 1), ("3x", 3)):
        paths.append(tmp_path / f"{size}.json")
        paths[-1].write_text(json.dumps(_report(size, scale)))
    out = subprocess.run([sys.executable, str(BENCH / "growth.py"), "--workdir", str(tmp_path / "g"), "--sizes",
                          "--reports", *map(str, paths)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "| train@in_batch | 2.0 / 0.50 | 6.0 / 0.87 | 1.00 | 0.50 |" in out.stdout
    assert "| ranking | 1.0 | 9.0 | 2.00 (1.00 in users x items) |  |" in out.stdout
    assert json.loads((tmp_path / "g" / "growth.json").read_text())["interactions"] == [1000, 3000]
    assert (tmp_path / "g" / "growth.png").read_bytes()[:4] == b"\x89PNG"
    one = subprocess.run([sys.executable, str(BENCH / "growth.py"), "--workdir", str(tmp_path / "g"), "--sizes",
                          "--reports", str(paths[0])], capture_output=True, text=True)
    assert one.returncode == 1 and "at least two sizes" in one.stderr and "Traceback" not in one.stderr
