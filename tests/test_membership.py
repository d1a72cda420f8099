"""The membership-inference audit: the holdout, the attack's arithmetic, and DP's effect on it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedshop.client.data.audit_holdout import NOBODY, audited, held_out_of_training, holdout_cut
from fedshop.client.data.demand import CustomerDemand, build_demand_panel
from fedshop.client.data.interactions import Interactions, build_interactions
from fedshop.client.data.schema import load_merchant
from fedshop.client.node.options import AuditCutError, audit_cut, audit_salt
from fedshop.client.training.recommender import NextItemExamples
from fedshop.client.training.round_plan import audit_holdout, audited_customers
from fedshop.explain.membership import LOW_FPR, membership_attack, pooled


def test_holdout_is_stable_and_exactly_the_share_asked() -> None:
    ids = [f"C{i:05d}" for i in range(5000)]
    held = held_out_of_training(ids, 0.2)
    assert held.sum() == 1000
    np.testing.assert_array_equal(held, held_out_of_training(ids, 0.2))
    assert not held_out_of_training(ids, 0.0).any() and held_out_of_training(ids, 1.0).all()
    assert (held_out_of_training(ids, 0.1) <= held).all()  # a smaller share keeps a subset out
    salted = held_out_of_training(ids, 0.2, b"node secret")  # a node's own salt: nobody else can tell who
    assert (salted != held).any() and np.array_equal(salted, held_out_of_training(ids, 0.2, b"node secret"))


@given(st.binary(min_size=16, max_size=16))
def test_every_salt_holds_out_the_same_number_of_customers(salt: bytes) -> None:
    """A hash threshold held each customer out with probability ``share``: on a shop of 300 customers at
    10%, 2% of salts held out fewer than the 20 the membership audit needs, and the quick demo lost it."""
    ids = [f"M0-C{i:05d}" for i in range(300)]
    held = held_out_of_training(ids, 0.1, salt)
    assert held.sum() == 30
    grown = held_out_of_training([*ids, *(f"M0-C{i:05d}" for i in range(300, 330))], 0.1, salt,
                                 holdout_cut(ids, 0.1, salt))
    assert np.array_equal(grown[:300], held)  # at the run's cut nobody changes side as the shop grows


@pytest.fixture(scope="module")
def largest_quick_shop(federation_dirs) -> Interactions:
    return build_interactions(load_merchant(federation_dirs[0]))


@settings(max_examples=60)
@given(st.binary(min_size=16, max_size=16))
def test_every_salt_holds_out_the_same_number_of_customers_the_audit_can_score(largest_quick_shop, salt) -> None:
    """The quick demo's largest shop (299 customers) has 46 whom the attack cannot score (one history item);
    with the cut over every customer, the 30 held out left 25 scored on average, and under 20 (no audit: the
    quick demo's report then had none, once in a CI run) for 0.4% of salts."""
    shop = largest_quick_shop
    scored = audited(shop.histories)
    assert (~scored).sum() > 0
    assert audited_customers(shop) == [c for c, s in zip(shop.customers, scored, strict=True) if s]
    held = audit_holdout(shop, {"audit-holdout": 0.1}, salt)
    assert (held & scored).sum() == round(0.1 * scored.sum())
    assert abs(held.sum() - 0.1 * len(shop.customers)) < 10  # the unscored are held out at about the same rate


def test_a_node_keeps_its_runs_cut_so_no_customer_changes_side_within_the_run(tmp_path) -> None:
    """A node restarted mid-run on an export with more customers: at a cut taken afresh, some who trained
    would count as never seen (the audit would look safer than it is); the run's kept cut holds."""
    ids = [f"C{i:05d}" for i in range(300)]
    grown = [*ids, *(f"C{i:05d}" for i in range(300, 400))]
    cut = audit_cut(tmp_path, "run-a", ids, 0.1)
    assert audit_cut(tmp_path, "run-a", grown, 0.1) == cut
    assert audit_cut(tmp_path, "run-b", grown, 0.1) == holdout_cut(grown, 0.1, (tmp_path / "audit.salt").read_bytes())
    assert audit_cut(tmp_path, "run-a", grown, 0.1) == cut  # another run in between keeps run-a's
    few = audit_cut(tmp_path, "run-c", ids[:4], 0.1)  # 0.4 of a customer rounds to nobody, and stays nobody
    assert few == NOBODY and not held_out_of_training(grown, 0.1, b"salt", few).any()
    assert audit_cut(tmp_path, "run-c", grown, 0.1) == NOBODY


def test_a_run_cannot_change_its_audit_holdout_midway(tmp_path) -> None:
    """At 0 for one round every held-out customer would train, and the last round's audit would count them
    as never seen: an operator could make the attack look weaker than it is."""
    ids = [f"C{i:05d}" for i in range(300)]
    audit_cut(tmp_path, "run-a", ids, 0.1)
    with pytest.raises(AuditCutError, match="started with an audit holdout of 0.1"):
        audit_cut(tmp_path, "run-a", ids, 0.0)
    (tmp_path / "audit-cut.json").write_text('{"run-a": {"share": 0.1, "cut": "zz"}}')
    with pytest.raises(AuditCutError, match="audit-cut.json"):
        audit_cut(tmp_path, "run-a", ids, 0.1)


def test_held_out_customers_never_train_either_model(federation_dirs) -> None:
    data = load_merchant(federation_dirs[1])
    interactions, panel = build_interactions(data), build_demand_panel(data)
    held = held_out_of_training(interactions.customers, 0.3)
    examples = NextItemExamples(interactions, 20, 8, 0, held)
    assert not {interactions.customers[c] for c in examples.customers} & set(np.array(interactions.customers)[held])
    assert len(examples) < len(NextItemExamples(interactions, 20, 8, 0))
    demand = CustomerDemand(panel, 0, held_out=frozenset(np.array(interactions.customers)[held]))
    assert len(demand) == sum(1 for c in panel.customer_ids if c not in set(np.array(interactions.customers)[held]))


def test_attack_that_separates_perfectly_and_one_that_cannot() -> None:
    perfect = membership_attack(np.arange(10.0, 20.0), np.arange(0.0, 10.0))
    assert perfect.auc == 1.0 and perfect.tpr_at_low_fpr == 1.0 and perfect.fpr == 0.0
    rng = np.random.default_rng(0)
    blind = membership_attack(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(blind.auc - 0.5) < 0.03 and blind.fpr <= LOW_FPR and blind.tpr_at_low_fpr < 0.1


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=40), st.lists(st.floats(-50, 50), min_size=1, max_size=40))
def test_attack_summary_is_a_valid_auc_and_rates(members: list[float], others: list[float]) -> None:
    attack = membership_attack(np.array(members), np.array(others))
    flipped = membership_attack(np.array(others), np.array(members))
    assert 0.0 <= attack.auc <= 1.0 and attack.auc + flipped.auc == pytest.approx(1.0)
    assert 0.0 <= attack.tpr_at_low_fpr <= 1.0 and attack.fpr <= LOW_FPR
    assert (attack.members, attack.non_members) == (len(members), len(others))


def test_pooled_attack_weights_merchants_by_their_pairs() -> None:
    big = membership_attack(np.arange(100.0, 200.0), np.arange(0.0, 100.0))
    small = membership_attack(np.zeros(2), np.ones(2))
    combined = pooled([big, small])
    assert combined.auc == pytest.approx((1.0 * 100 * 100 + 0.0 * 4) / (100 * 100 + 4))
    assert (combined.members, combined.non_members) == (102, 102)


def test_an_emptied_audit_salt_is_refused(tmp_path) -> None:
    """Keyed with nothing, the holdout's hash is anyone's to compute: who is held out would be public."""
    (tmp_path / "audit.salt").write_bytes(b"")
    with pytest.raises(AuditCutError, match="audit.salt"):
        audit_salt(tmp_path)
