"""Shared fixtures: small generated federations, and the real export when ../shared/data has it."""

from pathlib import Path

import pytest

from client.generate import FederationSpec, write_federation

REPO = Path(__file__).resolve().parents[1]
UCI_RETAIL = REPO.parent / "shared" / "data" / "uci_online_retail" / "online_retail.parquet"


@pytest.fixture(scope="session")
def federation_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The quick generated federation (3 merchants of different sizes), written as CSV."""
    return write_federation(tmp_path_factory.mktemp("federation"), FederationSpec.quick())


@pytest.fixture(scope="session")
def uci_retail() -> Path:
    """The UCI Online Retail export, or a clean skip saying why it is absent."""
    if not UCI_RETAIL.exists():
        pytest.skip(f"real data absent: {UCI_RETAIL} not found (see ../shared/data/README.md)")
    return UCI_RETAIL
