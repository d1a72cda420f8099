"""What a run will cost a merchant, known before it trains: the datasets and DP-SGD plan its node
follows each round, the bytes it exchanges and the time a round takes (``fedshop plan``).

The node's training (``fedshop.client.node.app``) takes its datasets and its round's DP plan from here, so the
noise multiplier and the ε that ``fedshop plan`` predicts from the run's settings and the
merchant's own data are the ones the node then uses and its ledger records.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from fedshop.client.data.audit_holdout import audited, held_out_of_training, holdout_cut
from fedshop.client.data.demand import CustomerDemand, DemandPanel
from fedshop.client.data.interactions import Interactions
from fedshop.client.training.local_fit import validation_customers
from fedshop.client.training.recommender import NextItemExamples, private_recipe
from fedshop.client.training.tiers import tier_release
from fedshop.models.parameters import parameter_count
from fedshop.privacy.ckks import ciphertext_count, encrypted_bytes
from fedshop.privacy.dp_sgd import DpPlan, TrainingShape, plan_round

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class ReferenceMachine:
    """What the benchmarks measured on the reference machine (2 cores, 2026-12-01), from which a
    round's time is estimated: a round costs Flower's messaging (``fixed_round_s``: a plain Flower
    round that only echoes the model between three nodes on localhost, ``benchmarks/round_time.py``)
    plus the slowest merchant's compute, in proportion to the examples it trains on
    (``benchmarks/privacy_cost.py``: a DP-SGD step with ghost clipping and a plain Adam step of the
    recommender at batch 128, per example; encrypting an update and decrypting the global model twice).
    Decrypting also draws the sum's random halves, about 1.2 ms per summed merchant and ciphertext
    (2.1 s for the demo's model over 100 merchants, once a round: ``privacy/ckks.py``), left out: it
    depends on how many merchants the round sums."""

    fixed_round_s: float = 12.4
    dp_example_s: float = 0.0677 / 128
    clear_example_s: float = 0.0320 / 128
    he_s: float = 0.30 + 2 * 0.15


REFERENCE = ReferenceMachine()


def audit_holdout(interactions: Interactions, config: Mapping[str, Any], salt: bytes = b"",
                  cut: bytes | None = None) -> np.ndarray:
    """Which of the merchant's customers the run keeps out of training for the audit, picked with the node's
    secret ``salt``: those at or below the run's ``cut`` (``fedshop.client.data.audit_holdout``; by default
    the cut that holds out exactly the run's share of the customers the audit can score, whatever the salt)."""
    share = float(config["audit-holdout"])
    cut = holdout_cut(audited_customers(interactions), share, salt) if cut is None else cut
    return held_out_of_training(interactions.customers, share, salt, cut)


def audited_customers(interactions: Interactions) -> list[str]:
    """The customers the membership audit can score, over whom a run's holdout cut is taken."""
    return [c for c, scored in zip(interactions.customers, audited(interactions.histories), strict=True) if scored]


def recommender_examples(interactions: Interactions, config: Mapping[str, Any], seed: int,
                         left_out: np.ndarray) -> NextItemExamples:
    """Recommender examples of the merchant's customers but those ``left_out`` (the audit holdout, at least).

    The local fit's validation customers keep their last visit's new items out: the local part is
    chosen on predicting them, and a shared model trained on them would have learnt them (in the clear
    above all) and look better on validation than it is, so the node would serve it alone too often."""
    validation = validation_customers(interactions.customers, left_out)
    return NextItemExamples(interactions.without_last_visit(validation), int(config["history-length"]),
                            int(config["negatives"]), seed, left_out, int(config["predictions-per-customer"]))


def training_datasets(interactions: Interactions, demand_panel: Callable[[], DemandPanel],
                      config: Mapping[str, Any], seed: int, held_out: np.ndarray) -> dict[str, Dataset]:
    """One example per customer for each model the run trains, the audit holdout (``held_out``, a mask from
    :func:`audit_holdout` with the node's salt) left out."""
    datasets: dict[str, Dataset] = {"recommender": recommender_examples(interactions, config, seed, held_out)}
    if config["pricing"]:
        datasets["demand"] = CustomerDemand(demand_panel(), seed,
                                            held_out=frozenset(np.array(interactions.customers)[held_out]))
    return datasets


def dp_round(examples: Mapping[str, int], config: Mapping[str, Any],
             delta: float) -> tuple[dict[str, tuple[int, float]], DpPlan]:
    """Each model's DP-SGD batch and learning rate for its ``examples``, and the round's plan: the member
    tiers' release (its own noise, ``fedshop.client.training.tiers``) and one noise multiplier for every
    model's DP-SGD, sized so that the run's rounds, tiers included, spend the run's target ε."""
    epochs = int(config["local-epochs"])
    clip = {"recommender": float(config["max-grad-norm"]), "demand": float(config["demand-max-grad-norm"])}
    full = {"recommender": (int(config["dp-batch-size"]), float(config["dp-learning-rate"])),
            "demand": (int(config["demand-dp-batch-size"]), float(config["demand-dp-learning-rate"]))}
    max_rate = float(config["dp-max-sample-rate"])
    recipes = {name: private_recipe(count, full[name][0], max_rate, full[name][1]) for name, count in examples.items()}
    shapes = [TrainingShape(name, count, recipes[name][0], epochs, clip[name]) for name, count in examples.items()]
    tiers = tier_release(config)
    plan = plan_round(shapes, int(config["num-server-rounds"]), float(config["target-epsilon"]),
                      float(config["noise-multiplier"]), delta, fixed=[tiers] if tiers else [])
    return recipes, plan


def round_compute_s(examples: Mapping[str, int], config: Mapping[str, Any]) -> float:
    """A merchant's compute in one round on the reference machine: every model's examples, once per
    local epoch (DP-SGD or plain), the local part's fit on the recommender's, and the encryption."""
    per_example = REFERENCE.dp_example_s if config["dp"] else REFERENCE.clear_example_s
    training = sum(examples.values()) * int(config["local-epochs"]) * per_example
    local_fit = examples["recommender"] * int(config["local-part-epochs"]) * REFERENCE.clear_example_s
    return training + local_fit + (REFERENCE.he_s if config["he"] else 0.0)


def round_time_s(compute_s: Iterable[float]) -> float:
    """The expected seconds of a round on the reference machine: Flower's messaging and the slowest
    merchant's compute (each merchant's ``compute_s``)."""
    return REFERENCE.fixed_round_s + max(compute_s, default=0.0)


@dataclass(frozen=True)
class Traffic:
    """Bytes one merchant's node sends and receives in a round."""

    sent: int  # its update (encrypted: the weighted model's seeded ciphertexts)
    received: int  # the global model, once for training and once for evaluation (encrypted: a sum, not seeded;
    # its seeds add SEED_BYTES per summed merchant and ciphertext, left out: the plan does not know the round's)
    first_round_received: int  # encrypted, round 1 trains on no model sent: every node builds it from the seed


def round_traffic(he: bool) -> Traffic:
    """The model payloads of a round (Flower's message headers aside)."""
    clear = parameter_count() * FLOAT32_BYTES
    if not he:
        return Traffic(clear, 2 * clear, 2 * clear)
    update, total = (ciphertext_count(parameter_count()) * size for size in encrypted_bytes())
    return Traffic(update, 2 * total, total)
