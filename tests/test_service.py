"""The merchant's HTTP service over real HTTP: a real uvicorn process (`fedshop serve`) on a node's model copy."""

import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fedshop.client.data.customer_profile import customer_profiles
from fedshop.client.data.schema import load_merchant
from fedshop.client.node.model_copy import load_models, save_model_copy
from fedshop.client.pricing.prices import OBJECTIVES
from fedshop.client.training.tiers import customer_tiers
from fedshop.core.settings import RunSettings
from fedshop.models.tiers import TIER_NAMES
from fedshop.service import MAX_K, load_shop, start_service, watch_models
from fedshop.simulation import run_simulated_federation
from tests.browser import browser
from tests.conftest import data_as_of
from tests.processes import free_port, wait_for_port

TOKEN = "s3cret-shop-token"


@pytest.fixture(scope="module")
def node_dir(federation_dirs, tmp_path_factory) -> Path:
    """The state directory of a merchant's node after one round (model copy, local part, ledger)."""
    out = tmp_path_factory.mktemp("served")
    nodes = [{"data-dir": str(d), "merchant": d.name, "state-dir": str(out / d.name), "allow-clear": True}
             for d in federation_dirs]
    run_simulated_federation(nodes, RunSettings(num_server_rounds=1, local_epochs=1, he=False,
                                                run_dir=str(out / "run"), tier_as_of=data_as_of(federation_dirs)))
    return out / federation_dirs[0].name


def _client(node_dir: Path, data_dir: Path, token: str | None, base_url: str = "http://127.0.0.1") -> TestClient:
    shop = load_shop(data_dir)
    return TestClient(start_service(shop, node_dir, watch_models(shop, node_dir, None), token), base_url=base_url)


def test_without_a_token_the_service_answers_on_this_machine(node_dir: Path, federation_dirs) -> None:
    """`fedshop serve` without a token listens on 127.0.0.1 only and must then answer every route (it
    answered 401 to all but /health)."""
    with _client(node_dir, federation_dirs[0], None) as client:
        assert client.get("/customers/x/recommendations").status_code == 200
        assert client.get("/prices").status_code == 200
        clearing = client.get("/prices", params={"objective": "clearance", "weeks": 6}).json()["prices"]
        assert any(record["clears"] is not None for record in clearing)
        no_weeks = client.get("/prices", params={"objective": "clearance"})
        assert no_weeks.status_code == 422 and no_weeks.json()["detail"][0]["loc"] == ["query", "weeks"]
        assert "Prices" in client.get("/", params={"view": "prices"}).text
        customers = load_shop(federation_dirs[0]).customers
        tiers = client.get("/tiers").json()
        assert sum(t["customers"] for t in tiers["tiers"]) == len(customers)
        assert "never sets a price" in tiers["pricing"]
        customer = sorted(customers)[0]
        tier = client.get(f"/customers/{customer}/tier").json()
        assert tier["tier"] in TIER_NAMES and tier["sentence"].endswith(f": {tier['tier']}")
        assert client.get("/customers/never-seen/tier").status_code == 404
        assert 'id="tiers"' in client.get("/", params={"view": "tiers"}).text
        rebound = client.get("/customers/x/recommendations", headers={"Host": "attacker.example:8080"})
        assert rebound.status_code == 400, "a page whose name was rebound to 127.0.0.1 read the shop's answers"


def test_prices_are_the_same_whatever_the_customers_tier(node_dir: Path, federation_dirs) -> None:
    """No personalised prices: the price routes take nothing that names a customer or a tier, and a customer of
    every tier, asking for the prices of what they are recommended (named as a shop's site would name them), gets
    the answers everyone gets."""
    profiles = customer_profiles(load_merchant(federation_dirs[0]))
    tiers = customer_tiers(load_models(node_dir, None).models.tiers, profiles)
    one_per_tier = tiers.groupby(tiers).head(1)
    assert len(one_per_tier) >= 2, tiers.value_counts()
    with _client(node_dir, federation_dirs[0], None) as client:
        price_routes = [route for route in client.app.routes if "price" in getattr(route, "path", "")]
        inputs = {param.name for route in price_routes
                  for param in route.dependant.query_params + route.dependant.path_params}
        assert len(price_routes) == 2 and not {name for name in inputs if "customer" in name or "tier" in name}
        asked = [{"objective": objective, **({"weeks": 6} if objective == "clearance" else {})}
                 for objective in OBJECTIVES]
        everyone = [client.get("/prices", params=params).json() for params in asked]
        for customer in one_per_tier.index:
            assert [client.get("/prices", params={**params, "customer": customer}).json()
                    for params in asked] == everyone
            shown = [item["item_id"] for item in client.get(f"/customers/{customer}/recommendations").json()["items"]]
            for params, answer in zip(asked, everyone, strict=True):
                listed = {record["item_id"]: record for record in answer["prices"]}
                for item in shown:
                    record = client.get(f"/items/{item}/price", params={**params, "customer": customer}).json()
                    assert record == {"model_round": answer["model_round"], **listed[item]}


def test_a_token_of_any_characters_is_refused_cleanly_and_k_is_bounded(node_dir: Path, federation_dirs) -> None:
    with _client(node_dir, federation_dirs[0], TOKEN) as client:
        for wrong in ("wrong", "tökén", "\u20ac" * 40):
            assert client.get("/prices", headers={"Authorization": f"Bearer {wrong}".encode()}).status_code == 401
            assert client.get("/prices", headers={"Cookie": f"fedshop_token={wrong}".encode()}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/customers/x/recommendations", params={"k": MAX_K}, headers=auth).status_code == 200
        too_many = client.get("/customers/x/recommendations", params={"k": MAX_K + 1, "diversity": 0.5}, headers=auth)
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["query", "k"]


def test_the_login_cookie_is_secure_when_the_page_is_served_over_https(node_dir: Path, federation_dirs) -> None:
    for base, secure in (("http://127.0.0.1", False), ("https://shop.example", True)):
        with _client(node_dir, federation_dirs[0], TOKEN, base) as client:
            opened = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
            assert opened.status_code == 303
            cookie = opened.headers["set-cookie"].lower()
            assert "httponly" in cookie and ("; secure" in cookie) == secure, cookie


@pytest.mark.slow
def test_the_service_answers_guards_refuses_bad_input_and_swaps_models_without_failing(
        node_dir: Path, federation_dirs, tmp_path: Path, launch) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    service, log = launch([sys.executable, "-m", "fedshop.cli", "serve", "--data", str(federation_dirs[0]),
                           "--model", str(node_dir), "--port", str(port), "--token-file", str(tmp_path / "token"),
                           "--workers", "2"], "service")
    wait_for_port(port, service, log)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    workers, deadline = set(), time.monotonic() + 120
    while len(workers) < 2:  # each worker process loads the shop itself; a new connection may reach either
        assert time.monotonic() < deadline, f"only workers {workers} answered"
        workers.add(httpx.get(f"{base}/health", timeout=30).json()["worker"])
    with httpx.Client(base_url=base, timeout=30) as client:
        health = client.get("/health").json()
        assert health["model_round"] == 1 and health["customers"] > 0 and health["epsilon_spent"] > 0

        assert client.get("/customers/x/recommendations").status_code == 401
        assert client.get("/prices", headers={"Authorization": "Bearer wrong"}).status_code == 401

        item = client.get("/prices", headers=auth).json()["prices"][0]["item_id"]
        customer = pd.read_csv(federation_dirs[0] / "orders.csv")["customer_id"].iloc[0]
        answer = client.get(f"/customers/{customer}/recommendations", params={"k": 5, "diversity": 0.3},
                            headers=auth).json()
        assert answer["fallback"] is None and len(answer["items"]) == 5
        assert all(rec["sentence"] and rec["by_history"] and rec["by_source"] for rec in answer["items"])
        stranger = client.get("/customers/never-seen/recommendations", headers=auth).json()
        assert stranger["fallback"].startswith("popular at this shop") and len(stranger["items"]) == 10

        bad_k = client.get(f"/customers/{customer}/recommendations", params={"k": 0}, headers=auth)
        assert bad_k.status_code == 422 and bad_k.json()["detail"][0]["loc"] == ["query", "k"]
        bad_diversity = client.get(f"/customers/{customer}/recommendations", params={"diversity": 2}, headers=auth)
        assert bad_diversity.status_code == 422 and bad_diversity.json()["detail"][0]["loc"] == ["query", "diversity"]
        assert client.get("/prices", params={"objective": "volume"}, headers=auth).status_code == 422
        unknown = client.get("/items/NO-SUCH-ITEM/price", headers=auth)
        assert unknown.status_code == 404 and "NO-SUCH-ITEM" in unknown.json()["detail"]
        priced = client.get(f"/items/{item}/price", headers=auth).json()
        assert priced["item_id"] == item and priced["reasons"]

        failures, stop = [], threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=base, timeout=30) as own:
                while not stop.is_set():
                    reply = own.get(f"/customers/{customer}/recommendations", headers=auth)
                    if reply.status_code != 200:
                        failures.append(reply.status_code)

        clients = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in clients:
            thread.start()
        loaded = load_models(node_dir)
        save_model_copy(node_dir, loaded.models, loaded.local, {"round": 2, "run": "r", "history_length": 20})
        deadline = time.monotonic() + 60
        while client.get("/health").json()["model_round"] != 2:
            assert time.monotonic() < deadline, "the service did not pick up the new model copy"
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        for thread in clients:
            thread.join()
        assert failures == [], f"requests failed during the swap: {failures}"


@pytest.mark.slow
def test_the_staff_page_shows_reasons_and_the_fallback_in_a_real_browser(node_dir: Path, federation_dirs,
                                                                        tmp_path: Path, launch) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    service, log = launch([sys.executable, "-m", "fedshop.cli", "serve", "--data", str(federation_dirs[0]),
                           "--model", str(node_dir), "--port", str(port), "--token-file", str(tmp_path / "token")],
                          "service")
    wait_for_port(port, service, log)
    customer = pd.read_csv(federation_dirs[0] / "orders.csv")["customer_id"].iloc[0]
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "token").send_keys("not the token")
        driver.find_element(By.ID, "login").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "refused"))
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "customer"))
        driver.find_element(By.ID, "customer").send_keys(customer)
        driver.find_element(By.ID, "lookup").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "recommendations"))
        reasons = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#recommendations .reason")]
        assert len(reasons) == 10 and all(reasons), driver.page_source[-2000:]
        assert not driver.find_elements(By.ID, "fallback")
        driver.get(f"http://127.0.0.1:{port}/?customer=never-seen&diversity=0.5")
        assert driver.find_element(By.ID, "fallback").text.startswith("popular at this shop")
        assert driver.find_element(By.ID, "diversity").get_attribute("value") == "0.5"
        driver.get(f"http://127.0.0.1:{port}/?customer={customer}")
        assert driver.find_element(By.ID, "tier").text.startswith("Member tier: ")
        driver.find_element(By.ID, "to-tiers").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "tiers"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#tiers tr")) == 1 + len(TIER_NAMES)
        driver.find_element(By.ID, "to-prices").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "prices"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#prices tr")
        assert len(rows) > 1 and all(row.find_elements(By.CSS_SELECTOR, "li") for row in rows[1:])
        errors = [entry for entry in driver.get_log("browser")  # but the 401 of the wrong token, on purpose
                  if entry["level"] == "SEVERE" and "/login" not in entry["message"]]
    finally:
        driver.quit()
    assert not errors, errors


@pytest.mark.slow
def test_the_service_serves_https_with_the_shops_certificate(node_dir: Path, federation_dirs, tmp_path: Path,
                                                            launch) -> None:
    """`fedshop serve --certificates`: HTTPS straight from the service, and the login cookie only over it."""
    from fedshop.operations.certificates import CA_FILE, create_certificates

    create_certificates(tmp_path / "certs", [])
    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    service, log = launch([sys.executable, "-m", "fedshop.cli", "serve", "--data", str(federation_dirs[0]),
                           "--model", str(node_dir), "--port", str(port), "--token-file", str(tmp_path / "token"),
                           "--certificates", str(tmp_path / "certs")], "https-service")
    wait_for_port(port, service, log)
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(tmp_path / "certs" / CA_FILE),
                      timeout=60) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = client.get("/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        assert health.json()["model_round"] >= 1 and health.json()["policy"]["require_dp"] is False
        opened = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert "secure" in opened.headers["set-cookie"].lower()
