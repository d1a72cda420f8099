"""Empirical privacy evidence: a membership-inference attack on the trained recommender.

Each merchant keeps a share of its customers out of training (the audit holdout, ranked by a
salted hash of the customer id and cut once per run, so the same customers every round of a run:
``fedshop.client.data.audit_holdout``). After the run,
the node attacks the final model: a customer's attack score is the mean log-probability the model
gives to each next item of their history, over the whole catalogue (a loss-threshold attack: a
model that memorised its training customers gives their sequences higher probability). The AUC of
that score between training customers (members) and held-out ones (non-members) is 0.5 when the
model reveals nothing about membership; DP-SGD bounds how far above 0.5 it can go.

Only the attack's summary leaves the node (AUC, true-positive rate at a low false-positive rate,
and the two counts), never a customer's score.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from fedshop.client.data.interactions import Interactions
from fedshop.client.training.recommender import padded_history
from fedshop.models.recommender import Recommender

LOW_FPR = 0.05
TRANSITIONS_PER_CUSTOMER = 20  # the last ones; bounds the audit's cost for long histories
BATCH = 2048


@torch.no_grad()
def attack_scores(model: Recommender, data: Interactions, history_length: int) -> np.ndarray:
    """Per customer: mean log-probability of each next item of their history (NaN with one item)."""
    features = data.features
    model.eval()
    all_ids, all_tokens = torch.from_numpy(features.id_index), torch.from_numpy(features.token_index)
    vectors, bias = model.item_vectors(all_ids, all_tokens), model.item_bias(all_ids, all_tokens)
    owners, targets, padded = [], [], []
    for customer, history in enumerate(data.histories):
        for position in range(max(1, len(history) - TRANSITIONS_PER_CUSTOMER), len(history)):
            owners.append(customer)
            targets.append(history[position])
            padded.append(padded_history(history[:position], features, history_length))
    log_prob = np.zeros(len(owners))
    for start in range(0, len(owners), BATCH):
        chunk = padded[start:start + BATCH]
        ids, tokens, mask = (torch.from_numpy(np.stack(p)) for p in zip(*chunk, strict=True))
        scores = torch.log_softmax(model.user_query(ids, tokens, mask) @ vectors.T + bias, dim=1)
        rows = torch.arange(len(chunk))
        log_prob[start:start + BATCH] = scores[rows, torch.as_tensor(targets[start:start + BATCH])].numpy()
    total = np.bincount(owners, weights=log_prob, minlength=len(data.histories))
    count = np.bincount(owners, minlength=len(data.histories))
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class MembershipAttack:
    """The attack's summary on one merchant's customers."""

    auc: float
    tpr_at_low_fpr: float
    fpr: float  # the false-positive rate actually reached (at most LOW_FPR)
    members: int
    non_members: int

    def record(self) -> dict:
        return asdict(self)


def membership_attack(member_scores: np.ndarray, non_member_scores: np.ndarray) -> MembershipAttack:
    """AUC (members scored above non-members) and the TPR at the threshold whose FPR is at most LOW_FPR."""
    members = member_scores[np.isfinite(member_scores)]
    others = non_member_scores[np.isfinite(non_member_scores)]
    if not len(members) or not len(others):
        return MembershipAttack(float("nan"), float("nan"), float("nan"), len(members), len(others))
    ranks = rankdata(np.concatenate([members, others]))
    auc = (ranks[: len(members)].sum() - len(members) * (len(members) + 1) / 2) / (len(members) * len(others))
    allowed = int(np.floor(LOW_FPR * len(others)))
    threshold = np.sort(others)[::-1][allowed] if allowed < len(others) else -np.inf
    return MembershipAttack(float(auc), float((members > threshold).mean()), float((others > threshold).mean()),
                            len(members), len(others))


def pooled(attacks: list[MembershipAttack]) -> MembershipAttack:
    """Merchants' attacks combined: each AUC weighted by its member x non-member pairs, each rate by
    its customers (an attacker who compares customers within one merchant)."""
    usable = [a for a in attacks if a.members and a.non_members and np.isfinite(a.auc)]
    if not usable:
        return MembershipAttack(float("nan"), float("nan"), float("nan"), 0, 0)
    pairs = np.array([a.members * a.non_members for a in usable], dtype=float)
    members = np.array([a.members for a in usable], dtype=float)
    others = np.array([a.non_members for a in usable], dtype=float)
    return MembershipAttack(
        float(np.average([a.auc for a in usable], weights=pairs)),
        float(np.average([a.tpr_at_low_fpr for a in usable], weights=members)),
        float(np.average([a.fpr for a in usable], weights=others)), int(members.sum()), int(others.sum()))
