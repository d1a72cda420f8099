"""The run's tamper-evident log: every round's record chained to the one before it by SHA-256.

A round's digest covers everything its record says (each merchant's metrics and the ε it reports,
failures, refusals), the merchants whose updates made the aggregate, the SHA-256 of that aggregate
and of the run's configuration, and the previous round's digest. Editing a past round, dropping one
or reordering them changes a digest that every later round builds on; :func:`verify_chain` names the
first round that no longer matches. The chain shows tampering with the record the operator keeps;
it does not stop an operator who rewrites every digest after an edit, which is why the latest
digest is also worth copying out of the run directory (the auditors' report prints it).
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

CHAIN = "chain"
GENESIS = "0" * 64


def _canonical(payload: Any) -> bytes:
    """The bytes a digest is taken of: JSON with sorted keys, as the record reads back from disk."""
    return json.dumps(json.loads(json.dumps(payload)), sort_keys=True, separators=(",", ":")).encode()


def config_sha256(config: dict[str, Any]) -> str:
    """SHA-256 of the run's configuration (settings and model layout)."""
    return hashlib.sha256(_canonical(config)).hexdigest()


def _digest(record: dict[str, Any]) -> str:
    links = {key: value for key, value in record[CHAIN].items() if key != "digest"}
    return hashlib.sha256(_canonical({**record, CHAIN: links})).hexdigest()


def chained(record: dict[str, Any], previous: str, config: dict[str, Any], aggregate_sha256: str) -> dict[str, Any]:
    """``record`` with its link in the chain: what it builds on, and its own digest."""
    links = {"previous": previous, "config_sha256": config_sha256(config), "aggregate_sha256": aggregate_sha256,
             "contributors": sorted(record.get("train", {}))}
    linked = {**record, CHAIN: links}
    linked[CHAIN] = {**links, "digest": _digest(linked)}
    return linked


@dataclass(frozen=True)
class ChainCheck:
    """What verifying a run's log found: ``broken_at`` is the first round that does not match."""

    verified: bool
    rounds: int
    broken_at: int | None
    problem: str
    head: str


def verify_chain(rounds: list[dict[str, Any]], config: dict[str, Any],
                 final_aggregate_sha256: str | None = None) -> ChainCheck:
    """Recompute every round's digest from its record and its predecessor's; also check that the last
    round was made under ``config`` and, when given, produced the aggregate the run kept."""
    previous = GENESIS
    for record in rounds:
        links, number = record.get(CHAIN), record.get("round")
        if not isinstance(links, dict) or "digest" not in links:
            return ChainCheck(False, len(rounds), number, f"round {number} has no digest", previous)
        if links.get("previous") != previous:
            return ChainCheck(False, len(rounds), number, f"round {number} does not follow the round before it "
                              "(a round was removed, reordered or its digest rewritten)", previous)
        if _digest(record) != links["digest"]:
            return ChainCheck(False, len(rounds), number,
                              f"round {number}'s record was changed after it was written", previous)
        previous = links["digest"]
    if rounds and rounds[-1][CHAIN]["config_sha256"] != config_sha256(config):
        return ChainCheck(False, len(rounds), rounds[-1]["round"],
                          "the run's configuration changed after its last round", previous)
    if rounds and final_aggregate_sha256 and rounds[-1][CHAIN]["aggregate_sha256"] != final_aggregate_sha256:
        return ChainCheck(False, len(rounds), rounds[-1]["round"],
                          "the model the run kept is not the aggregate its last round recorded", previous)
    return ChainCheck(True, len(rounds), None, "", previous)
