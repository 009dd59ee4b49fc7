import numpy as np
import pytest
import torch

from gamerec import csr
from gamerec.model import ItemFeatures, ModelConfig, TwoTower


def features(n_items=6):
    # item 1: tokens [1, 2]; item 2: none; item 3: [3]; item 4: [4, 1]; item 5: [2]
    return ItemFeatures(
        brand=np.array([0, 1, 2, 1, 0, 2]),
        log_price_z=np.array([0, 0.5, -1, 0, 0, 2], np.float32),
        price_missing=np.array([1, 0, 0, 1, 1, 0], bool),
        text_indptr=np.array([0, 0, 2, 2, 3, 5, 6]),
        text_indices=np.array([1, 2, 3, 4, 1, 2]),
    )


def model(**kw):
    torch.manual_seed(0)
    return TwoTower(ModelConfig(num_users=4, num_items=6, num_brands=3, num_tokens=5, dim=8, **kw), features())


def test_csr_gather_matches_python():
    indptr, indices = torch.tensor([0, 2, 2, 5]), torch.tensor([7, 8, 9, 10, 11])
    owner, values = csr.gather(indptr, indices, torch.tensor([2, 0, 1, 2]))
    assert owner.tolist() == [0, 0, 0, 1, 1, 3, 3, 3]
    assert values.tolist() == [9, 10, 11, 7, 8, 9, 10, 11]


def test_csr_from_pairs_keeps_row_order():
    indptr, indices = csr.from_pairs(torch.tensor([2, 0, 2, 0]), torch.tensor([5, 6, 7, 8]), 3)
    assert indptr.tolist() == [0, 2, 2, 4] and indices.tolist() == [6, 8, 5, 7]


def test_forward_shapes_and_normalisation():
    m = model()
    u, i = m(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 5]))
    assert u.shape == i.shape == (3, 8)
    assert torch.allclose(u.norm(dim=1), torch.ones(3)) and torch.allclose(i.norm(dim=1), torch.ones(3))
    assert m.embed_items(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, 8)  # any item shape
    assert m.score(torch.tensor([1, 2]), torch.tensor([3, 0])).shape == (2,)


def test_unnormalised_scores_are_dot_products():
    m = model(normalize=False).eval()
    users, items = torch.tensor([1, 2]), torch.tensor([4, 2])
    u, i = m(users, items)
    assert torch.allclose(m.score(users, items), (u * i).sum(1))
    assert m.logit_scale() == 1.0


def test_description_bag_is_the_mean_of_its_tokens():
    m = model().eval()
    bag = m.item_tower.text
    out = bag(torch.tensor([1, 2, 3]), torch.tensor([0, 2, 2]))  # rows [1,2], [], [3]
    assert torch.allclose(out[0], bag.weight[[1, 2]].mean(0))
    assert torch.equal(out[1], torch.zeros(8))


def test_checkpoint_loads_with_weights_only(tmp_path):
    m = model().eval()
    torch.save(m.checkpoint(), tmp_path / "m.pt")
    loaded = TwoTower.from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True)).eval()
    assert loaded.config == m.config
    users, items = torch.tensor([1, 3]), torch.tensor([4, 5])
    assert torch.equal(loaded.score(users, items), m.score(users, items))
    assert torch.equal(loaded.item_tower.text_indices, m.item_tower.text_indices)


def test_dropout_only_in_training_mode():
    m = model(dropout=0.5)
    users, items = torch.tensor([1, 2]), torch.tensor([1, 2])
    m.eval()
    assert torch.equal(m.score(users, items), m.score(users, items))
    m.train()
    torch.manual_seed(1)
    a = m.score(users, items)
    assert not torch.equal(a, m.score(users, items))


@pytest.mark.parametrize("bad", [6, -1])
def test_out_of_range_item_fails_loudly(bad):
    with pytest.raises((IndexError, RuntimeError)):
        model().embed_items(torch.tensor([bad]))
