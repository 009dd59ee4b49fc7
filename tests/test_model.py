import typing

import numpy as np
import pytest
import torch

from gamerec.config import ModelParams
from gamerec.csr import Csr
from gamerec.model import BLOCKS, INITS, ITEM_TOWERS, ModelConfig, TwoTower
from gamerec.prepared import ItemFeatures

# the stale defaults the tests were written for: one hidden layer of 64, dropout 0.1, the user id only
ID_TOWER = dict(hidden=[64], dropout=0.1, temperature=0.1, history=0, user_id=True, causal=False, pooling="mean")


def features(n_items=6):
    # item 1: tokens [1, 2]; item 2: none; item 3: [3]; item 4: [4, 1]; item 5: [2]
    return ItemFeatures(
        brand=np.array([0, 1, 2, 1, 0, 2]),
        log_price_z=np.array([0, 0.5, -1, 0, 0, 2], np.float32),
        price_missing=np.array([1, 0, 0, 1, 1, 0], bool),
        text=Csr(np.array([0, 0, 2, 2, 3, 5, 6]), np.array([1, 2, 3, 4, 1, 2])),
    )


def config(**arch) -> ModelConfig:
    return ModelConfig(num_users=4, num_items=6, num_brands=3, num_tokens=5, arch=ModelParams(dim=8, **arch))


def model(**kw):
    torch.manual_seed(0)
    return TwoTower(config(**{**ID_TOWER, **kw}), features())


@pytest.mark.parametrize("to", [torch.tensor, np.array], ids=["torch", "numpy"])
def test_csr_gather_matches_python(to):
    matrix = Csr(to([0, 2, 2, 5]), to([7, 8, 9, 10, 11]))
    owner, values = matrix.gather(to([2, 0, 1, 2]))
    assert owner.tolist() == [0, 0, 0, 1, 1, 3, 3, 3]
    assert values.tolist() == [9, 10, 11, 7, 8, 9, 10, 11]
    picked = matrix.select(to([2, 0]))
    assert picked.indptr.tolist() == [0, 3, 5] and picked.indices.tolist() == [9, 10, 11, 7, 8]


@pytest.mark.parametrize("to", [torch.tensor, np.array], ids=["torch", "numpy"])
def test_csr_from_pairs_keeps_row_order(to):
    indptr, indices = Csr.from_pairs(to([2, 0, 2, 0]), to([5, 6, 7, 8]), 3)
    assert indptr.tolist() == [0, 2, 2, 4] and indices.tolist() == [6, 8, 5, 7]


def test_the_architecture_is_the_params_group_and_round_trips_through_the_checkpoint_dict():
    cfg = config(hidden=[4], history=3)
    assert cfg.arch == ModelParams(dim=8, hidden=[4], history=3)  # no second set of defaults
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert list(cfg.to_dict())[:5] == ["num_users", "num_items", "num_brands", "num_tokens", "dim"]


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


# the history-pooling user tower

# user 1 bought items 3, 1, 5, 2 in this order; user 2 bought 4; user 3 nothing
HISTORY = Csr(indptr=np.array([0, 0, 4, 5, 5]), indices=np.array([3, 1, 5, 2, 4]))


def history_model(**kw):
    torch.manual_seed(0)
    arch = {**ID_TOWER, "hidden": [], "user_id": False, **kw}
    return TwoTower(config(**arch), features(), HISTORY).eval()


def mean_of(m, items):
    return m.item_tower.item(torch.tensor(items)).mean(0) if items else torch.zeros(8)


@pytest.mark.parametrize("causal", [False, True])
def test_pool_at_inference_is_the_last_items(causal):
    m = history_model(history=3, causal=causal)
    pool = m.user_tower.pool(torch.tensor([1, 2, 3]))
    for row, items in enumerate([[1, 5, 2], [4], []]):
        torch.testing.assert_close(pool[row], mean_of(m, items))


def test_causal_pool_sees_only_what_came_before_the_positive():
    m = history_model(history=2, causal=True)
    users = torch.tensor([1, 1, 1, 1])
    pool = m.user_tower.pool(users, leave_out=torch.tensor([3, 1, 5, 2]))
    for row, before in enumerate([[], [3], [3, 1], [1, 5]]):  # at most 2, the most recent
        torch.testing.assert_close(pool[row], mean_of(m, before))


def test_non_causal_pool_leaves_out_only_the_positive():
    m = history_model(history=4)
    pool = m.user_tower.pool(torch.tensor([1]), leave_out=torch.tensor([5]))
    torch.testing.assert_close(pool[0], mean_of(m, [3, 1, 2]))


def test_negatives_score_against_their_positives_history():
    m = history_model(history=4, causal=True)
    users, negative, positive = torch.tensor([1]), torch.tensor([4]), torch.tensor([1])
    u_neg, _ = m(users, negative, positive)
    u_pos, _ = m(users, positive)
    torch.testing.assert_close(u_neg, u_pos)  # the same cut: history [3], not the whole row
    u_all, _ = m(users, negative)
    assert not torch.allclose(u_neg, u_all)


def test_recency_pooling_weights_by_rank():
    m = history_model(history=3, pooling="recency")
    with torch.no_grad():
        torch.testing.assert_close(m.user_tower.pool(torch.tensor([1]))[0], mean_of(m, [1, 5, 2]))  # zeros = mean
        m.user_tower.recency.copy_(torch.tensor([20.0, 0.0, 0.0]))  # rank 0 = the most recent item
    torch.testing.assert_close(m.user_tower.pool(torch.tensor([1]))[0], mean_of(m, [2]), atol=1e-6, rtol=1e-4)


def test_history_model_checkpoint_round_trip(tmp_path):
    m = history_model(history=3, causal=True, pooling="recency")
    torch.save(m.checkpoint(), tmp_path / "m.pt")
    loaded = TwoTower.from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True)).eval()
    users = torch.tensor([1, 2, 3])
    torch.testing.assert_close(loaded.embed_users(users), m.embed_users(users))


# the attention user tower

def attention_model(history=4, **kw):
    torch.manual_seed(0)
    arch = dict(hidden=[], user_id=False, history=history, user_tower="attention", layers=2, heads=2,
                **{"attention_dropout": 0.0, **kw})
    return TwoTower(config(**arch), features(), HISTORY).eval()


@pytest.mark.parametrize("block", BLOCKS)
def test_attention_output_at_a_token_does_not_see_the_tokens_after_it(block):
    tower = attention_model(block=block).user_tower
    tokens = torch.tensor([[-1, 3, 1, 5], [-1, 3, 1, 2]])  # the same up to column 2
    with torch.no_grad():
        out = tower.encode(tokens)
    torch.testing.assert_close(out[0, :3], out[1, :3])
    assert not torch.allclose(out[0, 3], out[1, 3])


@pytest.mark.parametrize("block", BLOCKS)
def test_attention_padding_changes_no_output(block):
    tower = attention_model(history=6, block=block).user_tower
    with torch.no_grad():
        short = tower.encode(torch.tensor([[-1, 3, 1]]))
        padded = tower.encode(torch.tensor([[-1, 3, 1, 0, 0, 0]]))
    torch.testing.assert_close(padded[0, :3], short[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("block", BLOCKS)
def test_rows_encoded_by_width_equal_the_padded_batch_at_every_used_token(block):
    tower = attention_model(history=4, block=block).user_tower
    tokens = torch.tensor([[-1, 3, 1, 5], [-1, 0, 0, 0], [2, 4, 0, 0], [-1, 3, 0, 0]])  # widths 4, 1, 2, 2
    with torch.no_grad():
        by_width, padded = tower.encode_by_width(tokens), tower.encode(tokens)
    used = tokens != 0
    torch.testing.assert_close(by_width[used], padded[used], atol=1e-6, rtol=1e-5)
    assert not by_width[~used].any()


def test_attention_windows_are_the_last_tokens_before_the_cut():
    tower = attention_model(history=3).user_tower
    known = Csr(torch.tensor([0, 0, 4, 5, 5]), torch.tensor([3, 1, 5, 2, 4]))  # user 1: 3, 1, 5, 2
    tokens, last = tower.windows(torch.tensor([1, 1, 1, 2, 3]), known, torch.tensor([3, 1, 2, 0, 0]))
    # before 3: nothing; before 1: [3]; before 2: the last 3 tokens of [START, 3, 1, 5]; user 2: [START, 4]
    assert tokens.tolist() == [[-1, 0, 0], [-1, 3, 0], [3, 1, 5], [-1, 4, 0], [-1, 0, 0]]
    assert last.tolist() == [0, 1, 2, 1, 0]


def test_whole_sequence_training_gives_each_position_its_evaluation_embedding():
    from gamerec.model import Sequences
    from gamerec.training import SequenceLayout

    m = attention_model(history=4)
    users, positives = torch.tensor([1, 1, 1, 1, 2]), torch.tensor([3, 1, 5, 2, 4])  # HISTORY, in time order
    layout = SequenceLayout.of(users, positives, 4)
    sequences = Sequences(layout.tokens, layout.chunk, layout.column)
    with torch.no_grad():
        whole = m.embed_users(users, sequences=sequences)
        one_by_one = m.embed_users(users, leave_out=positives)  # each cut before its positive
    torch.testing.assert_close(whole, one_by_one, atol=1e-6, rtol=1e-5)


def test_a_long_user_s_chunks_overlap_by_half_so_every_positive_sees_half_a_window():
    from gamerec.training import SequenceLayout

    users, positives = torch.tensor([1] * 7 + [2, 2]), torch.tensor([11, 12, 13, 14, 15, 16, 17, 21, 22])
    layout = SequenceLayout.of(users, positives, 4)  # stride 2: chunks start at tokens 0, 2, 4
    assert layout.tokens.tolist() == [[-1, 11, 12, 13], [12, 13, 14, 15], [14, 15, 16, 0], [-1, 21, 0, 0]]
    # positives 0-3 from chunk 0, 4-5 from chunk 1's last two tokens, 6 from chunk 2; user 2 from chunk 3
    assert layout.chunk.tolist() == [0, 0, 0, 0, 1, 1, 2, 3, 3]
    assert layout.column.tolist() == [0, 1, 2, 3, 2, 3, 2, 0, 1]
    assert layout.width.tolist() == [4, 4, 3, 2] and layout.count.tolist() == [4, 2, 1, 2]
    odd = SequenceLayout.of(users, positives, 5)  # stride 3: chunks at tokens 0 and 3
    assert odd.tokens.tolist() == [[-1, 11, 12, 13, 14], [13, 14, 15, 16, 0], [-1, 21, 0, 0, 0]]
    assert odd.column.tolist() == [0, 1, 2, 3, 4, 2, 3, 0, 1]


def test_each_long_user_positive_is_the_output_after_the_items_of_its_chunk():
    from gamerec.model import Sequences
    from gamerec.training import SequenceLayout

    m = attention_model(history=4)
    users, positives = torch.tensor([1] * 7), torch.tensor([3, 1, 5, 2, 4, 1, 3])  # items 1-5
    layout = SequenceLayout.of(users, positives, 4)
    with torch.no_grad():
        whole = m.embed_users(users, sequences=Sequences(layout.tokens, layout.chunk, layout.column))
        prefixes = [m.user_tower.encode(layout.tokens[c : c + 1, : j + 1])[0, j]
                    for c, j in zip(layout.chunk.tolist(), layout.column.tolist())]
    torch.testing.assert_close(whole, torch.nn.functional.normalize(torch.stack(prefixes), dim=-1), atol=1e-6, rtol=1e-5)
    # positive 5 sees items 1, 5, 2, 4: the window before it, as evaluation would give it
    assert layout.tokens[layout.chunk[5], : layout.column[5] + 1].tolist() == [1, 5, 2, 4]


def test_sequence_batches_hold_whole_chunks_in_a_random_order():
    from gamerec.training import SequenceLayout

    sizes = [1, 2, 9, 3, 1, 6, 2, 1, 4, 1] * 20  # users' train lengths, long and short mixed
    users = torch.repeat_interleave(torch.arange(1, len(sizes) + 1), torch.tensor(sizes))
    layout = SequenceLayout.of(users, torch.randint(1, 6, (len(users),)), 4)
    batches = layout.batches(16, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(len(users)))  # every positive once
    chunks = [set(layout.chunk[b].tolist()) for b in batches]
    assert all(a.isdisjoint(b) for i, a in enumerate(chunks) for b in chunks[i + 1 :])  # a chunk is never split
    widths = [layout.width[sorted(c)] for c in chunks]
    assert sum(len(set(w.tolist())) > 1 for w in widths) > len(batches) // 2  # widths mixed, not sorted into batches


def test_attention_users_embed_alike_alone_or_in_passes_of_alike_length(monkeypatch):
    from gamerec.model import AttentionTower

    m = attention_model(history=3)
    tower, users = m.user_tower, torch.tensor([1, 2, 3, 0, 1])  # 4 items (window cut to 3), 1 item, none, none
    monkeypatch.setattr(AttentionTower, "EMBED_ROWS", 2)  # three passes, each cut to its own longest window
    with torch.no_grad():
        together = m.embed_users(users)
        tokens, last = tower.windows(users, Csr(tower.history_indptr, tower.history_indices))
        alone = [tower.encode(tokens[n : n + 1])[0, last[n]] for n in range(len(users))]  # full width, one by one
    torch.testing.assert_close(together, torch.nn.functional.normalize(torch.stack(alone), dim=-1), atol=1e-6, rtol=1e-5)
    assert m.embed_users(torch.tensor([], dtype=torch.long)).shape == (0, 8)  # no users: no pass


def test_tables_dense_layers_and_the_attention_tower_s_own_weights_learn_at_their_own_rates():
    from gamerec.config import TrainParams

    params = TrainParams(lr=0.02, dense_lr=0.005, attention_lr=0.001)
    m = attention_model()
    opt = m.configure_optimizers(params)
    assert [g["name"] for g in opt.param_groups] == ["tables", "dense", "attention"]
    own = {id(p) for p in m.user_tower.parameters()} - {id(p) for p in m.item_tower.parameters()}
    rates = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert {rates[i] for i in own} == {0.001}
    assert id(m.user_tower.blocks.layers[0].self_attn.in_proj_weight) in own and id(m.user_tower.position) in own
    tables = {id(m.weight) for m in m.modules() if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)}
    assert {rate for i, rate in rates.items() if i not in own | tables} == {0.005}  # the item tower's dense layers
    assert id(m.item_tower.price.weight) in rates and rates[id(m.item_tower.item.weight)] == 0.02
    assert {id(p) for p in opt.param_groups[0]["params"]} == tables and len(tables) == 3  # id, brand, text
    assert len(rates) == len(list(m.parameters()))  # every weight in one group
    assert all(e.sparse for e in m.modules() if isinstance(e, torch.nn.Embedding))  # lazy_adam: sparse gradients
    pool = history_model(history=3)
    pool_opt = pool.configure_optimizers(TrainParams(optimizer="adam", lr=0.02, dense_lr=0.005, attention_lr=0.001))
    assert [g["lr"] for g in pool_opt.param_groups] == [0.02, 0.005]  # the tables, the rest; no attention tower
    tables = {id(m.weight) for m in pool.modules() if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)}
    assert {id(p) for p in pool_opt.param_groups[0]["params"]} == tables
    assert not any(m.sparse for m in pool.modules() if isinstance(m, torch.nn.Embedding))  # adam: dense gradients
    pool_opt = pool.configure_optimizers(TrainParams(optimizer="adam", lr=0.02))
    assert [g["lr"] for g in pool_opt.param_groups] == [0.02, 0.02]  # dense_lr 0 (the default): lr


@pytest.mark.parametrize("block", BLOCKS)
def test_attention_checkpoint_round_trip_loads_with_weights_only(tmp_path, block):
    m = attention_model(block=block)
    torch.save(m.checkpoint(), tmp_path / "m.pt")
    loaded = TwoTower.from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True)).eval()
    assert loaded.config.arch.user_tower == "attention"
    users = torch.tensor([1, 2, 3])
    torch.testing.assert_close(loaded.embed_users(users), m.embed_users(users))


def test_the_id_item_tower_is_the_id_s_embedding_alone_and_round_trips(tmp_path):
    assert set(ITEM_TOWERS) == set(typing.get_args(typing.get_type_hints(ModelParams)["item_tower"]))
    m = attention_model(item_tower="id", normalize=False)
    assert [name for name, _ in m.item_tower.named_parameters()] == ["item.weight"]  # no brand, price, text, layer
    items = torch.tensor([[1, 5], [2, 2]])
    torch.testing.assert_close(m.embed_items(items), m.item_tower.item.weight[items])
    assert not m.embed_items(items, ("id",)).any() and m.item_tower.inputs == ("id",)
    torch.save(m.checkpoint(), tmp_path / "m.pt")
    loaded = TwoTower.from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True)).eval()
    users = torch.tensor([1, 2, 3])
    torch.testing.assert_close(loaded.embed_users(users), m.eval().embed_users(users))
    torch.testing.assert_close(loaded.embed_items(items), m.embed_items(items))


def test_the_id_plus_features_tower_adds_a_layer_over_the_features_to_the_id_s_own_vector(tmp_path):
    m = attention_model(item_tower="id_plus_features", normalize=False)
    tower, items = m.item_tower, torch.tensor([1, 2, 3, 4])
    assert tower.mlp[0].in_features == 3 * 8 and tower.inputs == ("id", "brand", "price", "description")
    parts = tower.parts(items)
    layer = tower.mlp[0]  # the id's vector, plus one linear layer over [brand, price, description], by hand
    want = (parts["id"] + parts["brand"] @ layer.weight[:, :8].T + parts["price"] @ layer.weight[:, 8:16].T
            + parts["description"] @ layer.weight[:, 16:].T + layer.bias)
    torch.testing.assert_close(m.embed_items(items), want)
    # with no features, items are their id vectors plus one shared vector: their differences are the ids'
    bare = m.embed_items(items, ("brand", "price", "description"))
    torch.testing.assert_close(bare - bare[0], (tower.item.weight[items] - tower.item.weight[1]).detach())
    torch.save(m.checkpoint(), tmp_path / "m.pt")
    loaded = TwoTower.from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True)).eval()
    torch.testing.assert_close(loaded.embed_items(items), m.embed_items(items))


def test_attention_params_are_checked():
    from gamerec.errors import GamerecError

    with pytest.raises(GamerecError, match="model.user_tower = attention needs .*model.dim divisible by model.heads"):
        ModelParams(dim=8, user_tower="attention", heads=3)


def test_normal_init_draws_every_linear_and_embedding_weight_at_0_02_and_keeps_padding_rows_and_norms():
    assert set(INITS) == set(typing.get_args(typing.get_type_hints(ModelParams)["init"]))  # every param value has one
    arch = ModelParams(dim=32, user_tower="attention", history=4, heads=2)
    cfg = ModelConfig(num_users=4, num_items=5000, num_brands=3, num_tokens=5, arch=arch)
    torch.manual_seed(0)
    m = TwoTower(cfg)
    assert abs(m.item_tower.item.weight.std().item() - 1.0) < 0.02  # torch's own: N(0, 1) rows
    INITS["normal"](m)
    block = m.user_tower.blocks.layers[0]
    assert abs(m.item_tower.item.weight.std().item() - 0.02) < 0.0005  # 160k draws
    for weight in (block.self_attn.in_proj_weight, block.linear1.weight, m.item_tower.price.weight):
        assert 0.012 < weight.std().item() < 0.028
    assert not m.item_tower.brand.weight[0].any() and not m.item_tower.text.weight[0].any()  # padding stays 0
    assert not block.self_attn.in_proj_bias.any() and not block.linear1.bias.any()
    assert (block.norm1.weight == 1).all() and not block.norm1.bias.any()


@pytest.mark.parametrize("block", BLOCKS)
def test_the_recency_bias_is_added_per_distance_keeps_attention_causal_and_learns(block):
    tower = attention_model(history=6, recency_bias=True, block=block).user_tower
    tokens = torch.tensor([[-1, 3, 1, 5, 0, 0], [-1, 3, 1, 2, 4, 0]])  # the same up to column 2
    with torch.no_grad():
        zero = tower.encode(tokens)
        used = tokens != 0
        torch.testing.assert_close(zero[used], attention_model(history=6, block=block).user_tower.encode(tokens)[used])  # bias 0: as without
        tower.recency.copy_(torch.tensor([0.0, -1.0, -2.0, -3.0, -4.0, -5.0]))
        out = tower.encode(tokens)
        short = tower.encode(tokens[:1, :4])
    assert not torch.allclose(out[0, 1:4], zero[0, 1:4])  # the bias changes what a token attends to
    torch.testing.assert_close(out[0, :3], out[1, :3])  # still causal
    torch.testing.assert_close(out[0, :4], short[0], atol=1e-6, rtol=1e-5)  # padding changes nothing
    tower.encode(tokens).sum().backward()
    assert tower.recency.grad[:4].abs().min() > 0 and any(p is tower.recency for p in tower.own_parameters())


def test_the_sasrec_layout_norms_the_input_and_every_residual_sum_with_a_4x_gelu_feed_forward():
    assert set(BLOCKS) == set(typing.get_args(typing.get_type_hints(ModelParams)["block"]))  # every param value has one
    tower = attention_model(history=4, block="sasrec").user_tower
    block = tower.blocks.layers[0]
    assert block.linear1.out_features == 32 and block.activation is torch.nn.functional.gelu and not block.norm_first
    tokens = torch.tensor([[2, 3, 1, 5]])  # items only: START's embedding starts at 0, inside the norm's epsilon
    with torch.no_grad():
        inputs = tower.embed_tokens(tokens)
        blocks_out = tower.blocks(inputs, mask=torch.triu(torch.ones(4, 4, dtype=torch.bool), 1))
    for x in (inputs, blocks_out):  # fresh norms (weight 1, bias 0): every token mean 0, variance 1
        torch.testing.assert_close(x.mean(-1), torch.zeros(1, 4), atol=1e-5, rtol=0)
        torch.testing.assert_close(x.var(-1, unbiased=False), torch.ones(1, 4), atol=1e-3, rtol=0)
    assert isinstance(tower.norm, torch.nn.Identity)  # no second norm on the output
    with torch.no_grad():  # and no layer after the blocks: the user is the last block's output
        torch.testing.assert_close(tower.encode(tokens), blocks_out)
    pre = attention_model(history=4).user_tower
    assert pre.blocks.layers[0].linear1.out_features == 16 and isinstance(pre.input_norm, torch.nn.Identity)
    assert isinstance(pre.mlp[-1], torch.nn.Linear)  # pre-norm: a linear layer after the blocks' final norm


def test_the_sasrec_layout_drops_out_after_each_sublayer_but_not_inside_the_feed_forward():
    sasrec = attention_model(history=4, block="sasrec", attention_dropout=0.5).user_tower.train()
    pre = attention_model(history=4, attention_dropout=0.5).user_tower.train()
    for layer in sasrec.blocks.layers:  # RecBole's FeedForward: dense, GELU, dense, dropout
        assert isinstance(layer.dropout, torch.nn.Identity) and layer.dropout1.p == layer.dropout2.p == 0.5
    layer = sasrec.blocks.layers[0]
    x = torch.randn(3, 4, layer.linear1.in_features)
    torch.manual_seed(0)
    dropped = layer._ff_block(x)  # dropout2 only: each output either 0 or the undropped value x 2
    full = layer.linear2(layer.activation(layer.linear1(x)))
    assert torch.all((dropped == 0) | torch.isclose(dropped, full * 2, atol=1e-6))
    assert all(layer.dropout.p == 0.5 for layer in pre.blocks.layers)
