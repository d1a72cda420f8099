"""Shared fixtures: small generated federations, a small trained recommender, and the real export when
../shared/data has it."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from fedshop.client.data.customer_profile import end_of_week
from fedshop.client.data.generate import FederationSpec, write_federation
from fedshop.client.data.interactions import Interactions, build_interactions
from fedshop.client.data.schema import load_merchant
from fedshop.client.node.options import AUDIT_SALT_FILE
from fedshop.client.training.recommender import NextItemExamples, shuffled_loader, train_epochs
from fedshop.core.files import write_secret
from fedshop.models.recommender import Recommender, build_recommender
from tests.processes import launcher

REPO = Path(__file__).resolve().parents[1]
UCI_RETAIL = REPO.parent / "shared" / "data" / "uci_online_retail" / "online_retail.parquet"


@pytest.fixture(scope="session")
def federation_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The quick generated federation (3 merchants of different sizes), written as CSV."""
    return write_federation(tmp_path_factory.mktemp("federation"), FederationSpec.quick())


@pytest.fixture
def one_item_customers_federation(tmp_path: Path) -> list[Path]:
    """The quick federation, but every customer of its last merchant bought a single item (nothing to
    train on or score)."""
    merchants = write_federation(tmp_path / "data", FederationSpec.quick())
    orders = merchants[-1] / "orders.csv"
    pd.read_csv(orders).drop_duplicates("customer_id").to_csv(orders, index=False)
    return merchants


@pytest.fixture(scope="session")
def uci_retail() -> Path:
    """The UCI Online Retail export, or a clean skip saying why it is absent."""
    if not UCI_RETAIL.exists():
        pytest.skip(f"real data absent: {UCI_RETAIL} not found (see ../shared/data/README.md)")
    return UCI_RETAIL


def train_small_recommender(data_dir: Path, epochs: int) -> tuple[Recommender, Interactions]:
    """A recommender trained briefly (seeded, in the clear) on one merchant, in eval mode, and its data."""
    data = build_interactions(load_merchant(data_dir))
    model = build_recommender(seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    train_epochs(model, shuffled_loader(NextItemExamples(data, 20, 16, seed=0), 32, seed=0), optimizer, epochs)
    return model.eval(), data


def data_as_of(data_dirs: list[Path]) -> str:
    """The end of the week of the merchants' last order, as a run's ``tier-as-of``: their customers' tiers
    profiled at the data's date, not today's (generated orders end in January 2026)."""
    return end_of_week(max(load_merchant(d).orders["timestamp"].max() for d in data_dirs)).date().isoformat()


def fixed_audit_salt(state_dir: Path) -> str:
    """``state_dir`` as a node's state directory holding one fixed audit salt (a node makes a random one), so
    that nodes in different directories hold out the same customers: runs meant to match must train on the
    same."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if not (state_dir / AUDIT_SALT_FILE).exists():
        write_secret(state_dir / AUDIT_SALT_FILE, b"fedshop-tests-16")
    return str(state_dir)


@pytest.fixture
def launch(tmp_path: Path):
    """Start real processes (``tests.processes.launcher``); none is left running after the test."""
    yield from launcher(tmp_path)
