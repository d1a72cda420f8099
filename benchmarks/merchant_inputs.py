"""The command line, the merchant data and the training examples the benchmarks share.

Imported by the benchmark scripts as a sibling module (``benchmarks/`` has no ``__init__.py``:
Opacus installs a top-level ``benchmarks`` package of its own).
"""

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from fedshop.client.data.generate import RATE_SPREAD, FederationSpec, write_federation
from fedshop.client.data.interactions import Interactions
from fedshop.client.data.partition import partition_export
from fedshop.client.data.schema import merchant_directories
from fedshop.client.training.recommender import NextItemExamples
from fedshop.core.settings import RunSettings


def _spread(text: str) -> float:
    """A coefficient of variation from the command line: a number, 0 or more."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (0: one rate for all), got {text}")
    return value


def benchmark_parser(description: str) -> argparse.ArgumentParser:
    """``--data``, ``--merchants``, ``--by``, ``--quick`` and ``--json``; a benchmark may add its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, help="merchant directories, or one export file to partition")
    parser.add_argument("--merchants", type=int, default=4, help="merchants to split an export into")
    parser.add_argument("--by", default="Country", help="column an export is split by")
    parser.add_argument("--quick", action="store_true", help="small data, 2 rounds of 1 epoch")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--products", type=int, help="generated data: the product universe's size")
    parser.add_argument("--shop-sizes", help="generated data: comma-separated customers of each merchant")
    parser.add_argument("--rate-spread", type=_spread,
                        help="generated data: customers' order rates' coefficient of variation "
                             f"(default {RATE_SPREAD:g}; 0: every customer buys at one rate)")
    return parser


def benchmark_settings(args: argparse.Namespace) -> RunSettings:
    """The run settings every benchmark starts from (in the clear; 2 rounds of 1 epoch with --quick)."""
    logging.getLogger("flwr").setLevel(logging.WARNING)
    settings = RunSettings(he=False, dp=False, audit_holdout=0.0)  # baselines train on every customer
    return replace(settings, num_server_rounds=2, local_epochs=1) if args.quick else settings


def merchant_dirs(args: argparse.Namespace, workdir: Path, seed: int = 0) -> list[Path]:
    """Generated merchants (drawn with ``seed``), the merchants ``--data`` names, or ``--data``'s export
    partitioned."""
    if args.data is None:
        spec = replace(FederationSpec.quick() if args.quick else FederationSpec(), seed=seed)
        if args.products:
            spec = replace(spec, products=args.products)
        if args.shop_sizes:
            spec = replace(spec, customers=tuple(int(n) for n in args.shop_sizes.split(",")))
        if args.rate_spread is not None:
            spec = replace(spec, rate_spread=args.rate_spread)
        return write_federation(workdir / "data", spec)
    if args.data.is_file():
        partition_export(args.data, args.merchants, args.by, workdir / "data")
        return merchant_directories(workdir / "data")
    return merchant_directories(args.data)


def training_examples(data: Interactions, settings: RunSettings, seed: int) -> NextItemExamples:
    """Examples of every customer's every item under ``settings`` (its history length, negatives and
    predictions): what fedshop's model trains on when a merchant trains it alone."""
    return NextItemExamples(data, settings.history_length, settings.negatives, seed,
                            predictions=settings.predictions_per_customer)
