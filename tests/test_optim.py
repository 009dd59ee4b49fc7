"""gamerec's Adam takes torch.optim's steps bit for bit, dense and sparse, and resumes from its state."""

import pytest
import torch

from gamerec.optim import Adam


def test_a_first_step_moves_every_weight_by_lr_against_its_gradient_sign():
    # after one step the bias-corrected moments are g and g^2, so the step is lr * g / (|g| + eps)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    w.grad = torch.tensor([0.5, -4.0, 0.0])
    Adam([{"params": [w]}], lr=0.1).step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.9, 3.0]))


def _table_and_layer(seed: int) -> tuple[torch.nn.Embedding, torch.nn.Linear]:
    torch.manual_seed(seed)
    return torch.nn.Embedding(50, 8, sparse=True), torch.nn.Linear(8, 3)


def _train(table, layer, steps, step_of, start=0):
    """Steps `start` to `steps` of a seeded batch of rows through the table and the layer."""
    for n in range(start, steps):
        rows = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(n))
        step_of(layer(table(rows)).square().mean(), n)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_dense_and_sparse_steps_equal_torch_optims_bit_for_bit(weight_decay):
    mine, theirs = _table_and_layer(0), _table_and_layer(0)
    theirs[0].sparse = mine[0].sparse = weight_decay == 0  # weight decay: dense gradients only, as in training
    ours = Adam([{"params": [mine[0].weight], "lr": 0.05}, {"params": list(mine[1].parameters()), "lr": 0.01}],
                lr=0.05, weight_decay=weight_decay)
    if weight_decay == 0:
        reference = [torch.optim.SparseAdam([theirs[0].weight], lr=0.05),
                     torch.optim.Adam(theirs[1].parameters(), lr=0.01)]
    else:
        reference = [torch.optim.Adam([{"params": [theirs[0].weight], "lr": 0.05},
                                       {"params": list(theirs[1].parameters()), "lr": 0.01}], weight_decay=weight_decay)]

    def step_ours(loss, n):
        ours.zero_grad()
        loss.backward()
        if n >= 3:
            mine[1].bias.grad = None  # a weight without a gradient: skipped, its step count kept
        ours.step()

    def step_theirs(loss, n):
        for opt in reference:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if n >= 3:
            theirs[1].bias.grad = None
        for opt in reference:
            opt.step()

    _train(*mine, 5, step_ours)
    _train(*theirs, 5, step_theirs)
    for a, b in zip([*mine[0].parameters(), *mine[1].parameters()], [*theirs[0].parameters(), *theirs[1].parameters()]):
        assert torch.equal(a, b)
    assert ours.state[mine[1].bias]["step"] == 3 and ours.state[mine[1].weight]["step"] == 5


def test_a_run_resumed_from_the_saved_state_ends_where_the_uninterrupted_one_does(tmp_path):
    def optimiser(table, layer):
        return Adam([{"params": [table.weight]}, {"params": list(layer.parameters()), "lr": 0.01}], lr=0.05)

    def stepper(opt):
        def step(loss, _):
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    straight = _table_and_layer(1)
    _train(*straight, 6, stepper(optimiser(*straight)))
    first = _table_and_layer(1)
    opt = optimiser(*first)
    _train(*first, 3, stepper(opt))
    torch.save({"model": [first[0].state_dict(), first[1].state_dict()], "opt": opt.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    second = _table_and_layer(2)  # other weights, overwritten by the saved ones
    second[0].load_state_dict(saved["model"][0])
    second[1].load_state_dict(saved["model"][1])
    resumed = optimiser(*second)
    resumed.load_state_dict(saved["opt"])
    _train(*second, 6, stepper(resumed), start=3)
    for a, b in zip([*straight[0].parameters(), *straight[1].parameters()], [*second[0].parameters(), *second[1].parameters()]):
        assert torch.equal(a, b)


def test_a_state_of_other_weights_is_refused():
    a = Adam([{"params": [torch.nn.Parameter(torch.zeros(2))]}], lr=0.1)
    b = Adam([{"params": [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]}], lr=0.1)
    with pytest.raises(ValueError, match="state of 1 weights, expected 2"):
        b.load_state_dict(a.state_dict())
