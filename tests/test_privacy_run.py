"""Whole simulated runs with encryption and DP: same model as in the clear, budgets enforced."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedshop.cli import app
from fedshop.client.node.model_copy import load_models
from fedshop.client.node.options import node_options
from fedshop.client.node.plan import merchant_plan
from fedshop.client.training.round_plan import REFERENCE
from fedshop.core.protocol import RATE_STEP
from fedshop.core.settings import RunSettings
from fedshop.models.parameters import parameter_count
from fedshop.privacy.ckks import ciphertext_count, create_keys, encrypted_bytes, load_public_context, parse_sum
from fedshop.rundir.store import RunStore
from fedshop.simulation import run_simulated_federation
from tests.conftest import fixed_audit_salt


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    create_keys(folder)
    return folder


def _nodes(federation_dirs: list[Path], keys: Path, state: Path, budgets: dict[str, float] | None = None):
    return [{"data-dir": str(d), "merchant": d.name, "secret-context": str(keys / "secret.ctx"),
             "state-dir": fixed_audit_salt(state / d.name), "epsilon-budget": (budgets or {}).get(d.name, 10.0),
             "allow-clear": True}
            for d in federation_dirs]


# Each encrypted aggregate is within a step of its fixed-point grid (a few millionths of the largest
# parameter: tests/test_ckks.py) of the clear one. The second round's training (Adam) starts from
# models that differ by that much: each tensor then differs by about 1e-4 of its norm, and in some
# runs a few parameters whose gradients are near zero move by up to 1e-2 (Adam's normalised step
# turns a sign flip of a tiny gradient into a full step), about 6e-4 of their tensor's norm. A model
# that lost a merchant's update or a fixed-point scale is off by far more than 1e-2 of the norm.
TRAINED_ON = 1e-2


def _assert_same_model(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    for name, value in reference.state_dict().items():
        distance = torch.linalg.vector_norm(model.state_dict()[name] - value)
        assert distance <= TRAINED_ON * max(float(torch.linalg.vector_norm(value)), 1e-6), name


def _federation_ndcg(rounds: list[dict]) -> list[float]:
    """Each round's NDCG@10 over every merchant's evaluated customers together (the strategy's aggregate)."""
    return [r["evaluate_aggregate"]["ndcg10"] for r in rounds]


@pytest.mark.slow
def test_encrypted_run_gives_the_same_model_as_the_run_in_the_clear(federation_dirs, keys, tmp_path) -> None:
    base = RunSettings(num_server_rounds=2, local_epochs=1, dp=False, public_context=str(keys / "public.ctx"))
    clear = run_simulated_federation(_nodes(federation_dirs, keys, tmp_path / "clear"),
                                     replace(base, he=False, run_dir=str(tmp_path / "clear-run")))
    blind = run_simulated_federation(_nodes(federation_dirs, keys, tmp_path / "blind"),
                                     replace(base, he=True, run_dir=str(tmp_path / "blind-run")))
    clear_model = load_models(clear).models
    blind_model = load_models(blind, keys / "secret.ctx").models
    _assert_same_model(blind_model, clear_model)
    # NDCG@10 is a mean of step functions of the scores: models this close can still swap a near-tie,
    # and one customer's held-out item moving one place moves the mean by up to 1/customers (2e-3
    # over these ~480 customers), and each merchant sends its NDCG on steps of RATE_STEP, so a swap can also
    # cross a step; benchmarks/quality.py checks 1e-3 on the macro of larger data.
    clear_rounds, blind_rounds = RunStore(clear).rounds(), RunStore(blind).rounds()
    customers = sum(m["num-examples"] for m in clear_rounds[-1]["evaluate"].values())
    assert _federation_ndcg(blind_rounds) == pytest.approx(_federation_ndcg(clear_rounds),
                                                           abs=2 / customers + RATE_STEP)

    # The operator's side of the encrypted run holds ciphertexts only.
    assert not (blind / "model.npz").exists() and (blind / "encrypted_model.npz").exists()
    public = load_public_context(keys / "public.ctx")
    for stored_model in [blind / "encrypted_model.npz", *(blind / "checkpoints").glob("*.npz")]:
        with np.load(stored_model) as stored:
            ciphertexts, seeds = parse_sum(public, dict(stored), parameter_count())
            assert len(ciphertexts) == seeds.shape[0] and seeds.shape[1] == len(federation_dirs)
    # Each merchant keeps its own decrypted copy, equal to the clear run's model.
    node_model = load_models(tmp_path / "blind" / federation_dirs[0].name).models
    _assert_same_model(node_model, clear_model)


@pytest.mark.slow
def test_merchant_past_its_budget_refuses_and_the_run_goes_on_as_planned(federation_dirs, keys, tmp_path) -> None:
    """`fedshop plan` predicts, before anything trains, the noise multiplier and the ε after every
    round that each node then uses and records, and which node will refuse."""
    small = federation_dirs[2].name
    settings = RunSettings(num_server_rounds=2, local_epochs=1, target_epsilon=3.0, run_dir=str(tmp_path / "run"),
                           public_context=str(keys / "public.ctx"))
    nodes = _nodes(federation_dirs, keys, tmp_path / "nodes", {small: 1.0})
    plans = {node["merchant"]: merchant_plan(node_options(node), settings.training_config()) for node in nodes}
    shown = CliRunner().invoke(app, ["plan", "--data", nodes[2]["data-dir"], "--state-dir", nodes[2]["state-dir"],
                                     "--budget", "1", "--rounds", "2", "--epsilon", "3", "--json"])
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.output)
    assert printed["traffic"]["sent"] == ciphertext_count(parameter_count()) * encrypted_bytes()[0]
    assert printed["merchants"][0]["refused_from_round"] == 1 == plans[small].refused_from_round
    assert printed["expected_round_s"] == pytest.approx(REFERENCE.fixed_round_s + printed["merchants"][0]["compute_s"])
    by_size = sorted(plans.values(), key=lambda p: p.examples["recommender"])
    assert [p.compute_s for p in by_size] == sorted(p.compute_s for p in by_size) and by_size[0].compute_s > 0
    run = run_simulated_federation(nodes, settings)
    rounds = RunStore(run).rounds()
    for merchant, planned in plans.items():
        if merchant == small:
            continue
        assert planned.refused_from_round is None
        for record, epsilon in zip(rounds, planned.epsilon_after_round, strict=True):
            trained = record["train"][merchant]
            assert trained["epsilon"] == pytest.approx(epsilon, rel=1e-9)
            assert trained["noise-multiplier"] == pytest.approx(planned.noise_multiplier, rel=1e-12)
    for record in rounds:
        assert record["failures"][small].startswith(f"privacy budget reached for merchant {small}: "
                                                    "this round would bring ε to ")
        assert small not in record["train"] and len(record["train"]) == 2
    others = [d.name for d in federation_dirs if d.name != small]
    for merchant in others:
        first, last = (r["train"][merchant] for r in rounds)
        assert 0 < first["epsilon"] < last["epsilon"] <= 3.0 + 0.05
        assert first["delta"] < 1 / first["num-examples"] and first["noise-multiplier"] > 0
    assert RunStore(run).status()["state"] == "finished"
