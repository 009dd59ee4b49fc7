"""Negatives mined by the model: from its ranking of each user's unseen items, past the very top."""

import torch

from gamerec import mining, model as models
from gamerec.config import MinedParams, ModelParams, SamplingParams, TrainParams
from gamerec.retrieval import top_k
from gamerec.samplers import sample
from gamerec.training import Examples, fit

ARCH = ModelParams(dim=8, history=3)


def test_mined_negatives_come_from_the_models_ranks_past_the_top(prepared):
    neg = sample("mined", prepared.train_positives(), SamplingParams(), MinedParams(negatives=3, skip_top=2, pool=5))
    ex = Examples.from_frame(neg.examples, neg.manifest)
    model = models.build(prepared, ARCH, seed=0).eval()
    drawn = mining.mine(model, ex, ex.mining, torch.Generator().manual_seed(0), memory_mb=64)
    assert drawn.shape == (len(ex), 3)
    seen = {(u, i) for u, i in zip(ex.users.tolist(), ex.positives.tolist())}
    assert not any((u, i) in seen for u, row in zip(ex.users.tolist(), drawn.tolist()) for i in row)
    for user in ex.users.unique()[:10].tolist():  # ranks 2..6 of the user's own ranking
        mine = ex.positives[ex.users == user]
        exclude = (torch.tensor([0, len(mine)]), mine)
        with torch.no_grad():
            ranked = top_k(model.embed_users(torch.tensor([user])), model.embed_items(torch.arange(prepared.num_items)),
                           exclude, 7)[0]
        window = set(ranked[2:7].tolist())
        assert set(drawn[ex.users == user].flatten().tolist()) <= window
    assert not mining.due(ex.mining, 1) and mining.due(ex.mining, 2)


def test_training_redraws_the_negatives_each_refresh(prepared):
    neg = sample("mined", prepared.train_positives(), SamplingParams(), MinedParams(refresh=1))
    ex = Examples.from_frame(neg.examples, neg.manifest)
    first = ex.negatives.clone()
    result = fit(models.build(prepared, ARCH, seed=0), ex, prepared.holdout("val"),
                 TrainParams(epochs=2, batch_size=256), progress=False)
    assert len(result.history) == 2 and not torch.equal(ex.negatives, first) and ex.neg_log_q is None
