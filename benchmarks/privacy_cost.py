"""What privacy costs, measured side by side in one run: upload size, HE time, DP step time.

    python benchmarks/privacy_cost.py [--quick] [--json OUT]

* upload: bytes of one merchant's encrypted update / (4 x parameters), i.e. x float32;
* encrypt / aggregate / decrypt seconds for one update and for the server's sum over merchants;
* DP-SGD step time / plain step time for the recommender on generated merchant data, with the
  exact embedding norm sampler fedshop registers and with Opacus' built-in one.

Run by hand in the project's environment (it is not a test); ratios are only compared within one run.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from merchant_inputs import training_examples
from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample
from opacus.grad_sample.utils import register_norm_sampler
from rich.console import Console
from rich.table import Table
from torch import nn

from client.generate import FederationSpec, generate_federation
from client.interactions import build_interactions
from client.training import NextItemExamples, shuffled_loader, train_epochs, train_recommender_private
from fedshop.settings import RunSettings
from models.parameters import flatten, parameter_count
from models.recommender import build_recommender
from models.shared import build_shared_models
from privacy.ckks import (
    CIPHERTEXT_SIZES,
    add_updates,
    create_keys,
    decrypt,
    encrypt,
    load_public_context,
    load_secret_context,
    parse_update,
)
from privacy.dp_sgd import TrainingShape, plan_round
from privacy.embedding_norms import embedding_norm_sample


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def he_costs(merchants: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        create_keys(Path(folder))
        secret = load_secret_context(Path(folder) / "secret.ctx")
        public = load_public_context(Path(folder) / "public.ctx")
    vectors = [flatten(build_shared_models(seed).state_dict()) * 100 for seed in range(merchants)]
    encrypt_s, update = timed(lambda: encrypt(secret, vectors[0]), repeats)
    updates = [update] + [encrypt(secret, v) for v in vectors[1:]]
    aggregate_s, total = timed(lambda: add_updates([parse_update(public, u, parameter_count()) for u in updates]),
                               repeats)
    decrypt_s, plain = timed(lambda: decrypt(secret, total, parameter_count()), repeats)
    error = float(np.abs(plain - np.sum(vectors, axis=0)).max())
    upload = sum(c.nbytes for c in update.values())
    return {"parameters": parameter_count(), "ciphertexts": len(update[CIPHERTEXT_SIZES]), "upload_bytes": upload,
            "upload_x_float32": upload / (4 * parameter_count()), "encrypt_s": encrypt_s,
            "aggregate_s": aggregate_s, "aggregate_merchants": merchants, "decrypt_s": decrypt_s,
            "max_abs_error": error}


def _plain_step_time(dataset: NextItemExamples, batch: int) -> float:
    model = build_recommender(0)
    loader = shuffled_loader(dataset, batch, seed=0)
    start = time.perf_counter()
    train_epochs(model, loader, torch.optim.Adam(model.parameters(), lr=0.01), epochs=1)
    return (time.perf_counter() - start) / len(loader)


def _dp_step_time(dataset: NextItemExamples, batch: int) -> float:
    release = plan_round([TrainingShape("recommender", len(dataset), batch, 1, 0.5)], 5, 8.0, 0.0, 1e-5).releases[0]
    start = time.perf_counter()
    train_recommender_private(build_recommender(0), dataset, release, batch, 2.0, epochs=1)
    return (time.perf_counter() - start) / release.mechanism.steps


def dp_costs(customers: int, batch: int) -> dict:
    torch.set_num_threads(1)
    merchant = generate_federation(FederationSpec(customers=(customers, 40), products=600))[0]
    dataset = training_examples(build_interactions(merchant), RunSettings(), seed=0)
    _dp_step_time(dataset, batch)  # warm-up: imports, first allocations
    plain = _plain_step_time(dataset, batch)
    ours = _dp_step_time(dataset, batch)
    register_norm_sampler(nn.Embedding)(compute_embedding_norm_sample)
    try:
        builtin = _dp_step_time(dataset, batch)
    finally:
        register_norm_sampler(nn.Embedding)(embedding_norm_sample)
    return {"customers": len(dataset), "batch_size": batch, "plain_step_s": plain, "dp_step_s": ours,
            "dp_step_opacus_builtin_norm_s": builtin, "dp_over_plain": ours / plain,
            "dp_builtin_over_plain": builtin / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer merchants, customers and repeats")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    he = he_costs(merchants=2 if args.quick else 4, repeats=1 if args.quick else 3)
    dp = dp_costs(customers=300 if args.quick else 1200, batch=128)
    table = Table("measure", "value", "target", title="fedshop privacy cost (one run, side by side)")
    table.add_row("parameters", f"{he['parameters']:,}", "")
    table.add_row("upload per merchant", f"{he['upload_bytes'] / 2**20:.1f} MiB ({he['ciphertexts']} ciphertexts)", "")
    table.add_row("upload / float32 bytes", f"{he['upload_x_float32']:.2f}x", "<= 8x now, <= 1x packed")
    table.add_row("encrypt one update", f"{he['encrypt_s']:.2f} s", "")
    table.add_row(f"server sum of {he['aggregate_merchants']} updates", f"{he['aggregate_s']:.2f} s", "")
    table.add_row("decrypt the sum", f"{he['decrypt_s']:.2f} s", "")
    table.add_row("HE max abs error", f"{he['max_abs_error']:.1e}", "")
    table.add_row("plain step (Adam)", f"{dp['plain_step_s'] * 1e3:.1f} ms", "")
    table.add_row("DP step (ghost, exact embedding norms)", f"{dp['dp_step_s'] * 1e3:.1f} ms", "")
    table.add_row("DP step (ghost, Opacus' embedding norms)", f"{dp['dp_step_opacus_builtin_norm_s'] * 1e3:.1f} ms", "")
    table.add_row("DP / plain step", f"{dp['dp_over_plain']:.1f}x", "<= 3x")
    table.add_row("DP (Opacus' norms) / plain step", f"{dp['dp_builtin_over_plain']:.1f}x", "")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"he": he, "dp": dp, "quick": args.quick}, indent=2))


if __name__ == "__main__":
    main()
