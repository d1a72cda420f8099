"""Per-customer DP-SGD: exact clipping norms, the accountant, the budget a node enforces."""

import math
from pathlib import Path

import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample
from torch import nn
from torch.utils.data import Subset

from fedshop.client.data.interactions import build_interactions
from fedshop.client.data.schema import load_merchant
from fedshop.client.training.recommender import (
    IterateAverage,
    NextItemExamples,
    NextItemLoss,
    train_recommender_private,
)
from fedshop.models.recommender import build_recommender
from fedshop.privacy.dp_sgd import TrainingShape, plan_round
from fedshop.privacy.embedding_norms import embedding_norm_sample
from fedshop.privacy.ledger import Budget, BudgetExceeded, Mechanism, PrivacyLedger, RoundAlreadyPaid, default_delta


def _brute_force_norms(layer: nn.Embedding, ids: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    norms = []
    for sample_ids, sample_grads in zip(ids, backprops, strict=True):
        grad = torch.zeros_like(layer.weight).index_add_(0, sample_ids.reshape(-1),
                                                         sample_grads.reshape(-1, layer.embedding_dim))
        if layer.padding_idx is not None:
            grad[layer.padding_idx] = 0
        norms.append(grad.norm())
    return torch.stack(norms)


def test_embedding_norms_are_the_true_per_sample_gradient_norms() -> None:
    torch.manual_seed(0)
    layer = nn.Embedding(40, 4, padding_idx=0)
    ids = torch.randint(0, 40, (6, 5, 3))
    ids[:, :, -1] = 0  # padded token slots, as in the recommender's token lists
    backprops = torch.randn(6, 5, 3, 4)
    ours = embedding_norm_sample(layer, [ids], backprops)[layer.weight]
    torch.testing.assert_close(ours, _brute_force_norms(layer, ids, backprops))
    unpadded = ids.clamp(min=1)
    opacus_own = compute_embedding_norm_sample(layer, [unpadded], backprops)[layer.weight]
    torch.testing.assert_close(embedding_norm_sample(layer, [unpadded], backprops)[layer.weight], opacus_own)


def test_ghost_clipping_norm_is_each_customers_whole_gradient_over_all_their_predictions(federation_dirs) -> None:
    data = build_interactions(load_merchant(federation_dirs[2]))
    dataset = NextItemExamples(data, 20, 8, seed=0, predictions=3)
    batch = [torch.stack(part) for part in zip(*(dataset[i] for i in range(6)), strict=True)]
    assert batch[0].shape == (6, 60) and batch[2].shape == (6, 3, 60) and batch[3].shape == (6, 11)
    model = build_recommender(2)
    expected = []
    for customer in range(6):
        model.zero_grad()
        NextItemLoss()(model(*(part[customer:customer + 1] for part in batch)), torch.zeros(1)).backward()
        expected.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())))
    private, optimizer, criterion, _ = PrivacyEngine().make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), criterion=NextItemLoss(),
        data_loader=torch.utils.data.DataLoader(dataset, batch_size=6), noise_multiplier=0.0, max_grad_norm=1e6,
        grad_sample_mode="ghost")
    criterion(private(*batch), torch.zeros(6)).backward()
    torch.testing.assert_close(private.get_norm_sample(), torch.stack(expected), rtol=1e-4, atol=1e-6)


def test_ledger_grows_matches_opacus_accountant_and_persists(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    releases = {"recommender": Mechanism(noise_multiplier=1.1, sample_rate=0.05, steps=60),
                "demand": Mechanism(noise_multiplier=1.1, sample_rate=0.2, steps=15)}
    reference = RDPAccountant()
    spent = []
    for number in range(1, 4):
        for model, release in releases.items():
            spent.append(ledger.record("run-1", number, model, release, delta=1e-5))
            for _ in range(release.steps):
                reference.step(noise_multiplier=release.noise_multiplier, sample_rate=release.sample_rate)
            assert spent[-1] == reference.get_epsilon(1e-5)
    assert spent == sorted(set(spent))
    assert PrivacyLedger(tmp_path / "ledger.json").epsilon(1e-5) == pytest.approx(spent[-1])


def test_noise_is_derived_from_the_run_target_epsilon_for_every_model_together() -> None:
    recommender = TrainingShape("recommender", examples=1000, batch_size=100, epochs=2, max_grad_norm=0.5)
    alone = plan_round([recommender], rounds=5, target_epsilon=3.0, noise_multiplier=0.0, delta=1e-4)
    assert alone.release("recommender").mechanism == Mechanism(alone.noise_multiplier, 0.1, 20)
    accountant = RDPAccountant()
    accountant.history = [(alone.noise_multiplier, 0.1, 100)]
    assert accountant.get_epsilon(1e-4) == pytest.approx(3.0, abs=0.01)

    demand = TrainingShape("demand", examples=800, batch_size=100, epochs=2, max_grad_norm=20.0)
    both = plan_round([recommender, demand], rounds=5, target_epsilon=3.0, noise_multiplier=0.0, delta=1e-4)
    assert both.noise_multiplier > alone.noise_multiplier  # the second model is paid for with noise
    assert both.release("demand").max_grad_norm == 20.0
    accountant.history = [(both.noise_multiplier, m.sample_rate, m.steps * 5) for m in both.mechanisms_in(1)]
    assert accountant.get_epsilon(1e-4) == pytest.approx(3.0, abs=0.01)
    fixed = plan_round([recommender], 5, target_epsilon=0.0, noise_multiplier=1.3, delta=1e-4)
    assert fixed.noise_multiplier == 1.3


def test_a_node_past_its_budget_refuses_with_a_reason_a_merchant_reads(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    round_ = Mechanism(noise_multiplier=0.8, sample_rate=0.1, steps=30)
    budget = Budget(epsilon=4.0, delta=1e-5)
    while ledger.epsilon(budget.delta, [round_]) <= budget.epsilon:
        ledger.authorize("m0", [round_], budget, "run", len(ledger.entries) + 1)
        ledger.record("run", len(ledger.entries) + 1, "recommender", round_, budget.delta)
    with pytest.raises(BudgetExceeded) as refused:
        ledger.authorize("m0", [round_], budget, "run", len(ledger.entries) + 1)
    message = str(refused.value)
    assert message.startswith("privacy budget reached for merchant m0: this round would bring ε to ")
    assert "over the budget ε=4" in message and "This node refuses to train" in message
    assert ledger.epsilon(budget.delta) <= budget.epsilon
    assert default_delta(2000) == pytest.approx(5e-5)


def test_a_round_already_paid_for_is_refused_not_charged_twice(tmp_path: Path) -> None:
    """A server that lost round 2 asked the node for it again: the resumed run spent ε 9.4 of a target 8."""
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    release, budget = Mechanism(noise_multiplier=1.0, sample_rate=0.1, steps=10), Budget(epsilon=10.0, delta=1e-5)
    ledger.authorize("m0", [release], budget, "run-a", 2)
    ledger.record("run-a", 2, "recommender", release, budget.delta)
    spent = ledger.epsilon(budget.delta)
    with pytest.raises(RoundAlreadyPaid, match="already spent ε on round 2 of run run-a"):
        PrivacyLedger(tmp_path / "ledger.json").authorize("m0", [release], budget, "run-a", 2)
    assert PrivacyLedger(tmp_path / "ledger.json").epsilon(budget.delta) == spent
    PrivacyLedger(tmp_path / "ledger.json").authorize("m0", [release], budget, "run-a", 3)


def test_private_training_changes_the_model_and_reports_what_it_spent(federation_dirs) -> None:
    data = build_interactions(load_merchant(federation_dirs[2]))
    dataset = NextItemExamples(data, 20, 16, seed=0)
    model, before = build_recommender(1), build_recommender(1).item_id.weight.clone()
    shape = TrainingShape("recommender", len(dataset), 16, 2, 0.5)
    release = plan_round([shape], 3, 8.0, 0.0, default_delta(len(data.customers))).release("recommender")
    loss, spent = train_recommender_private(model, dataset, release, batch_size=16, learning_rate=2.0, epochs=2)
    assert math.isfinite(loss)
    assert spent == release.mechanism
    assert not torch.equal(model.item_id.weight, before)
    assert not hasattr(model, "_forward_counter")  # Opacus' hooks are gone from the plain model
    again = build_recommender(1)
    train_recommender_private(again, dataset, release, batch_size=16, learning_rate=2.0, epochs=2)
    assert not torch.equal(model.item_id.weight, again.item_id.weight)  # noise no one can regenerate


def test_the_iterate_average_is_the_moving_average_of_the_steps_from_the_start() -> None:
    model = nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    average, seen = IterateAverage(model, 0.5), []
    for step in range(3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(float(step + 1))
        seen.append([p.detach().clone() for p in model.parameters()])
        average.step()
    average.load()
    for index, parameter in enumerate(model.parameters()):  # ((start/2 + it1/2)/2 + it2/2)/2 + it3/2
        expected = start[index] / 8 + seen[0][index] / 8 + seen[1][index] / 4 + seen[2][index] / 2
        torch.testing.assert_close(parameter.detach(), expected)
    last = IterateAverage(model, 0.0)
    with torch.no_grad():
        model.weight.add_(1.0)
    now = model.weight.detach().clone()
    last.step()
    last.load()
    assert torch.equal(model.weight, now)  # decay 0: the last iterate
    with pytest.raises(ValueError, match="decay lies in"):
        IterateAverage(model, 1.0)


def test_private_training_leaves_the_average_of_its_iterates(federation_dirs) -> None:
    """The average stays near the start when it forgets slowly, where the last iterate moves away."""
    data = build_interactions(load_merchant(federation_dirs[2]))
    dataset = NextItemExamples(data, 20, 16, seed=0)
    shape = TrainingShape("recommender", len(dataset), 16, 2, 0.5)
    release = plan_round([shape], 3, 8.0, 0.0, default_delta(len(data.customers))).release("recommender")
    moved = {}
    for decay in (0.0, 0.999):
        model, before = build_recommender(1), build_recommender(1).item_id.weight.clone()
        train_recommender_private(model, dataset, release, batch_size=16, learning_rate=2.0, epochs=2,
                                  average_decay=decay)
        moved[decay] = float((model.item_id.weight - before).norm())
    assert 0 < moved[0.999] < 0.05 * moved[0.0]


def test_a_batch_poisson_sampling_leaves_empty_is_a_noise_only_step(federation_dirs) -> None:
    """A merchant of a handful of customers: Poisson sampling often draws nobody into a batch. The step
    must still happen (noise alone, counted by the accountant); ghost clipping crashed on it, failing
    every round of the smallest merchants of a long-tailed federation."""
    data = build_interactions(load_merchant(federation_dirs[2]))
    few = Subset(NextItemExamples(data, 20, 16, seed=0), range(4))
    shape = TrainingShape("recommender", len(few), 1, 10, 0.5)
    release = plan_round([shape], 1, 8.0, 0.0, default_delta(len(data.customers))).release("recommender")
    model, before = build_recommender(1), build_recommender(1).item_id.weight.clone()
    loss, spent = train_recommender_private(model, few, release, batch_size=1, learning_rate=2.0, epochs=10)
    assert math.isfinite(loss) and spent == release.mechanism and spent.steps == 40
    assert not torch.equal(model.item_id.weight, before)


def test_every_step_the_accountant_counts_enters_the_iterate_average(federation_dirs, monkeypatch) -> None:
    """The noise-only steps of empty batches too: were they left out, the average's weights would say which
    batches nobody was drawn into (about a third of them here), which DP-SGD's release does not."""
    data = build_interactions(load_merchant(federation_dirs[2]))
    few = Subset(NextItemExamples(data, 20, 16, seed=0), range(4))
    release = plan_round([TrainingShape("recommender", len(few), 1, 10, 0.5)], 1, 8.0, 0.0,
                         default_delta(len(data.customers))).release("recommender")
    taken = []
    monkeypatch.setattr(IterateAverage, "step", lambda average: taken.append(1))
    _, spent = train_recommender_private(build_recommender(1), few, release, batch_size=1, learning_rate=2.0,
                                         epochs=10)
    assert len(taken) == spent.steps == 40
