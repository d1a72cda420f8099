"""The merchant's HTTP service: recommendations and prices, with their reasons, for the shop's own systems.

``fedshop serve`` runs it (FastAPI on uvicorn; its OpenAPI schema at ``/docs``) next to the merchant's
node, on the merchant's data and the model copy the node keeps. The shop's data (customers'
histories, the weekly demand, the co-purchases) is loaded once (:class:`Shop`); everything a request
needs from the model (the served recommender and the catalogue's side under it and under the shared
model, ``fedshop.client.ranking.recommend.Ranker``; the demand model) is prepared once per model version
(:class:`Prepared`). A watcher notices when the node writes a new copy after a round, prepares the
new version beside the old one and swaps the reference, so requests in flight finish on the version
they started with and none fails during a swap. With ``--workers N`` uvicorn runs N processes, each
loading its own copy (:func:`worker_service`). A bearer token guards every route but ``/health``;
without a token the service listens on this machine only. ``/`` is a small page for the shop's staff
(server-rendered, no script): a customer's recommendations with their reasons, tier and a diversity
slider, the price recommendations with their reasons and bounds, and the member tiers; with a token,
the page asks for it once and keeps it in an HTTP-only cookie. A customer's member tier
(``/customers/{id}/tier``) comes with its reason; no route sets a price by it.
"""

import gc
import hmac
import json
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from logging import WARNING, getLogger
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import pandas as pd
import torch
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, ORJSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.middleware.trustedhost import TrustedHostMiddleware

from fedshop.client.data.customer_profile import CustomerProfiles, customer_profiles
from fedshop.client.data.demand import DemandPanel, build_demand_panel
from fedshop.client.data.interactions import Interactions, build_interactions
from fedshop.client.data.schema import load_merchant
from fedshop.client.node.model_copy import load_models, model_files, model_round
from fedshop.client.node.options import node_options, saved_policy
from fedshop.client.pricing.prices import OBJECTIVES, recommend_prices
from fedshop.client.ranking.recommend import Ranker
from fedshop.client.training.local_fit import serving_model, shop_co_purchases
from fedshop.client.training.tiers import customer_tiers
from fedshop.explain.price_reasons import price_record
from fedshop.explain.recommendation_reasons import explain_recommendation
from fedshop.explain.tier_reasons import NOT_PRICED_BY_TIER, explain_tier, tier_summary
from fedshop.models.demand import DemandModel
from fedshop.models.local_part import CoPurchases
from fedshop.privacy.ledger import PrivacyLedger

WATCH_S = 1.0
TOKEN_VARIABLE = "FEDSHOP_SERVICE_TOKEN"
WORKER_CONFIG = "FEDSHOP_SERVICE_WORKER"  # JSON: data, model, secret_context
ONE_THREAD_PER_WORKER = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # read as a worker starts
LOOPBACK_NAMES = ["localhost", "127.0.0.1"]  # the Host a no-token service answers (Starlette reads IPv4 hosts only)
MAX_K = 100  # a diversity re-rank builds a pool of 10 k items and its pool² similarities: 1,000² at most
FALLBACK = "popular at this shop: the model knows no purchase of this customer, so only the items' popularity ranks"
log = getLogger("fedshop.service")
STAFF_PAGE = Environment(loader=PackageLoader("fedshop", "templates"),
                         autoescape=select_autoescape(["html"])).get_template("staff.html")


@dataclass(frozen=True)
class Shop:
    """The merchant's data as the service reads it, loaded once: it does not change with the model."""

    data_dir: Path
    interactions: Interactions
    customers: frozenset[str]
    panel: DemandPanel
    co_purchases: Callable[[float], CoPurchases]  # at a λ, counted once
    profiles: CustomerProfiles


def load_shop(data_dir: Path) -> Shop:
    """Load the merchant's data and profile its customers (its co-purchases are counted at the first λ a
    model copy asks for)."""
    merchant = load_merchant(data_dir)
    interactions = build_interactions(merchant)
    return Shop(data_dir, interactions, frozenset(interactions.customers), build_demand_panel(merchant),
                cache(partial(shop_co_purchases, interactions)), customer_profiles(merchant))


@dataclass
class Prepared:
    """One model version, ready to answer requests."""

    version: tuple
    shop: Shop
    ranker: Ranker
    demand: DemandModel
    tiers: pd.Series  # customer → tier name, from this version's centroids
    tier_summary: list[dict]
    round: int | None
    loaded_at: float
    prices: dict[tuple[str, float, int | None], list[dict]] = field(default_factory=dict)

    def price_records(self, objective: str, max_change: float, weeks: int | None = None) -> list[dict]:
        """Every item's recommended price with its reasons, computed once per version and question."""
        key = (objective, max_change, weeks)
        if key not in self.prices:
            panel = self.shop.panel
            self.prices[key] = [price_record(rec, objective) for rec in recommend_prices(
                self.demand, panel, range(len(panel.item_ids)), objective, max_change, weeks)]
        return self.prices[key]


def model_version(model_dir: Path) -> tuple:
    """What changes when the node writes a new model copy: its files' sizes and modification times."""
    return tuple((path.name, path.stat().st_mtime_ns, path.stat().st_size) for path in model_files(model_dir))


def prepare(shop: Shop, model_dir: Path, secret_context: Path | None) -> Prepared:
    """Load the current model copy and prepare what requests need: the served recommender and the
    catalogue's side under it and under the shared model (``fedshop.client.ranking.recommend.Ranker``)."""
    version = model_version(model_dir)
    loaded = load_models(model_dir, secret_context)
    interactions = shop.interactions
    served = serving_model(loaded.models.recommender, loaded.local, interactions, loaded.history_length,
                           shop.co_purchases)
    ranker = Ranker(served, interactions, loaded.history_length, shared=loaded.models.recommender)
    tiers = customer_tiers(loaded.models.tiers, shop.profiles)
    return Prepared(version, shop, ranker, loaded.models.demand, tiers,
                    tier_summary(tiers, shop.profiles, loaded.models.tiers.centroids()), model_round(model_dir),
                    time.time())


class ModelWatcher:
    """The current :class:`Prepared` version, replaced when the model copy changes."""

    def __init__(self, load: Callable[[], Prepared], version: Callable[[], tuple]) -> None:
        self._load, self._version = load, version
        self.current = load()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_S):
            if self._version() == self.current.version:
                continue
            try:
                self.current = self._load()  # one reference assignment: readers see the old or the new version
            except Exception as exc:  # a copy being written: keep serving the old one, try again
                log.log(WARNING, "model copy not loaded yet (%s); still serving round %s", exc, self.current.round)
                continue
            settle_heap()


def settle_heap() -> None:
    """Collect what the last version left and exempt everything now loaded (millions of objects for a
    large shop) from the collector's later passes: a full pass over them stalls every request."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


Objective = Literal[OBJECTIVES]  # the optimiser's objectives, defined once
MaxChange = Annotated[float, Query(gt=0.0, lt=1.0)]
Weeks = Annotated[int | None, Query(ge=1, le=104, description="For clearance: the weeks the stock should sell in.")]


def clearance_weeks(objective: str, weeks: int | None) -> int | None:
    """The clearance horizon (a 422 naming ``weeks`` when clearance is asked without one)."""
    if objective == "clearance" and weeks is None:
        raise HTTPException(422, [{"loc": ["query", "weeks"], "msg": "the clearance objective needs weeks",
                                   "type": "missing"}])
    return weeks


def build_service(watcher: ModelWatcher, token: str | None, epsilon_spent: Callable[[], float],
                  node_policy: Callable[[], dict | None]) -> FastAPI:
    """The service's routes over ``watcher``'s current model version; the watcher runs while it serves.
    ``/health`` states the ε the node spent (none left to state after a clear round) and the policy its
    node applies (``fedshop.core.node_policy``)."""

    @asynccontextmanager
    async def watching(_: FastAPI) -> AsyncIterator[None]:
        settle_heap()
        watcher.start()
        yield
        watcher.stop()

    service = FastAPI(title="fedshop merchant service", lifespan=watching,
                      description="Recommendations and prices for this merchant's customers, with their reasons.")
    if not token:  # this machine only: a web page elsewhere that rebinds its name to 127.0.0.1 gets a 400
        service.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES)

    def holds_token(given: str | None) -> bool:
        """Whether ``given`` is the token (compared as UTF-8 bytes in constant time: any character may come)."""
        return not token or hmac.compare_digest((given or "").encode("utf-8", "surrogateescape"),
                                                token.encode("utf-8", "surrogateescape"))

    async def authorized(authorization: Annotated[str | None, Header()] = None,
                         fedshop_token: Annotated[str | None, Cookie()] = None) -> None:
        if not token:  # no token configured: the service listens on this machine only (``fedshop serve``)
            return
        scheme, _, bearer = (authorization or "").partition(" ")
        if not ((scheme == "Bearer" and holds_token(bearer)) or (fedshop_token and holds_token(fedshop_token))):
            raise HTTPException(401, "this route needs the service's token: Authorization: Bearer <token>")

    guarded = [Depends(authorized)]

    def ranked(customer: str, k: int, diversity: float) -> dict[str, Any]:
        current = watcher.current
        items = current.ranker.recommend(customer, k, diversity)
        return {"customer": customer, "model_round": current.round,
                "fallback": None if customer in current.shop.customers else FALLBACK,
                "items": [explain_recommendation(item).record() for item in items]}

    def tier_of(customer: str) -> dict[str, Any] | None:
        current = watcher.current
        if customer not in current.tiers.index:
            return None
        return {"model_round": current.round, **explain_tier(customer, current.tiers[customer],
                                                             current.shop.profiles).record()}

    @service.get("/", response_class=HTMLResponse)
    def staff_page(customer: str = "", diversity: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0, view: str = "",
                   fedshop_token: Annotated[str | None, Cookie()] = None) -> str:
        current = watcher.current
        page = {"round": current.round, "customer": customer, "diversity": diversity}
        if token and not (fedshop_token and holds_token(fedshop_token)):
            return STAFF_PAGE.render(**page, view="login")
        if view == "prices":
            return STAFF_PAGE.render(**page, view=view, prices=current.price_records("revenue", 0.2))
        if view == "tiers":
            return STAFF_PAGE.render(**page, view=view, tiers=current.tier_summary, pricing=NOT_PRICED_BY_TIER)
        return STAFF_PAGE.render({**page, "view": view, "tier": tier_of(customer) if customer else None,
                                  **(ranked(customer, 10, diversity) if customer else {})})

    @service.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        given = parse_qs((await request.body()).decode()).get("token", [""])[0]
        if not holds_token(given):
            return HTMLResponse(STAFF_PAGE.render(round=watcher.current.round, view="login", refused=True), 401)
        opened = RedirectResponse("/", status_code=303)
        opened.set_cookie("fedshop_token", given, httponly=True, samesite="strict",
                          secure=request.url.scheme == "https")
        return opened

    @service.get("/health")
    def health() -> dict[str, Any]:
        current, spent = watcher.current, epsilon_spent()
        return {"status": "ok", "worker": os.getpid(), "model_round": current.round,
                "model_age_s": time.time() - current.loaded_at,
                "epsilon_spent": spent if math.isfinite(spent) else None,
                "guarantee": (f"(ε = {spent:.2f}, δ) per customer" if math.isfinite(spent) else
                              "none: the node trained a round without DP (its merchant allowed clear runs)"),
                "policy": node_policy(), "customers": len(current.shop.customers),
                "items": len(current.shop.interactions.features.item_ids)}

    @service.get("/customers/{customer}/recommendations", dependencies=guarded, response_class=ORJSONResponse)
    async def recommendations(customer: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                              diversity: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0) -> ORJSONResponse:
        """Computed on the event loop (a few ms, no thread hand-off); the JSON is built once, by orjson."""
        return ORJSONResponse(ranked(customer, k, diversity))

    @service.get("/customers/{customer}/tier", dependencies=guarded)
    def tier(customer: str) -> dict[str, Any]:
        """The customer's member tier, with the reason in words; tiers never set a price."""
        if (found := tier_of(customer)) is None:
            raise HTTPException(404, f"customer {customer!r} has no purchases in this merchant's orders")
        return found

    @service.get("/tiers", dependencies=guarded)
    def tiers() -> dict[str, Any]:
        """The shop's customers per member tier, with their median profile and the tier's centroid."""
        current = watcher.current
        return {"model_round": current.round, "as_of": str(current.shop.profiles.as_of),
                "tiers": current.tier_summary, "pricing": NOT_PRICED_BY_TIER}

    @service.get("/prices", dependencies=guarded)
    def prices(objective: Objective = "revenue", max_change: MaxChange = 0.2, weeks: Weeks = None) -> dict[str, Any]:
        current = watcher.current
        return {"model_round": current.round, "prices": current.price_records(objective, max_change,
                                                                              clearance_weeks(objective, weeks))}

    @service.get("/items/{item}/price", dependencies=guarded)
    def item_price(item: str, objective: Objective = "revenue", max_change: MaxChange = 0.2,
                   weeks: Weeks = None) -> dict[str, Any]:
        current = watcher.current
        for record in current.price_records(objective, max_change, clearance_weeks(objective, weeks)):
            if record["item_id"] == item:
                return {"model_round": current.round, **record}
        raise HTTPException(404, f"item {item!r} is not in this merchant's orders")

    return service


def watch_models(shop: Shop, model_dir: Path, secret_context: Path | None) -> ModelWatcher:
    """The node's model copy in ``model_dir`` prepared over ``shop`` now (a bad copy or key fails here,
    naming the problem), and watched for the next one."""
    return ModelWatcher(lambda: prepare(shop, model_dir, secret_context), lambda: model_version(model_dir))


def start_service(shop: Shop, model_dir: Path, watcher: ModelWatcher, token: str | None) -> FastAPI:
    """The service over ``shop`` and ``watcher``'s models (the node's copy in ``model_dir``), with the ε
    its node spent."""
    options = node_options({"data-dir": str(shop.data_dir), "state-dir": str(model_dir)})
    delta = options.budget(len(shop.customers)).delta
    return build_service(watcher, token, lambda: PrivacyLedger(options.ledger_path).epsilon(delta),
                         lambda: saved_policy(model_dir))


def worker_service() -> FastAPI:
    """One worker process's service, from what ``fedshop serve --workers N`` put in the environment
    (``WORKER_CONFIG``): uvicorn starts each worker as a fresh process that calls this."""
    torch.set_num_threads(1)
    config = json.loads(os.environ[WORKER_CONFIG])
    secret_context = Path(config["secret_context"]) if config["secret_context"] else None
    shop, model_dir = load_shop(Path(config["data"])), Path(config["model"])
    return start_service(shop, model_dir, watch_models(shop, model_dir, secret_context),
                         os.environ.get(TOKEN_VARIABLE) or None)
