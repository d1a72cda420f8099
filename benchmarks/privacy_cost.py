"""What privacy costs, measured side by side in one run: upload size, HE time, DP step time.

    python benchmarks/privacy_cost.py [--quick] [--json OUT]

* upload: bytes of one merchant's encrypted update / (4 x parameters), i.e. x float32, and the
  bytes of the sum the server sends back;
* encrypt / aggregate / decrypt seconds for one update and for the server's sum over merchants, and
  the largest error of the decrypted weighted average against the plaintext one (relative to the
  largest value): fedshop's packed encoding side by side with the CKKS vectors it used before;
* DP-SGD step time / plain step time for the recommender on generated merchant data, with the
  exact embedding norm sampler fedshop registers and with Opacus' built-in one.

Run by hand in the project's environment (it is not a test); ratios are only compared within one run.
"""

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tenseal as ts
import torch
from merchant_inputs import training_examples
from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample
from opacus.grad_sample.utils import register_norm_sampler
from rich.console import Console
from rich.table import Table
from torch import nn

from fedshop.client.data.generate import FederationSpec, generate_federation
from fedshop.client.data.interactions import build_interactions
from fedshop.client.training.recommender import (
    NextItemExamples,
    shuffled_loader,
    train_epochs,
    train_recommender_private,
)
from fedshop.core.settings import RunSettings
from fedshop.models.parameters import flatten, parameter_count
from fedshop.models.recommender import build_recommender
from fedshop.models.shared import build_shared_models
from fedshop.privacy.ckks import (
    CIPHERTEXT_SIZES,
    add_updates,
    create_keys,
    decrypt,
    encrypt,
    load_public_context,
    load_secret_context,
    parse_update,
)
from fedshop.privacy.dp_sgd import TrainingShape, plan_round
from fedshop.privacy.embedding_norms import embedding_norm_sample
from fedshop.privacy.fixed_point import Grid, value_range_of


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _models(merchants: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Merchant-sized models (the shared models' initial values, one seed each) and example counts."""
    weights = np.random.default_rng(0).integers(20, 3000, merchants)
    return [flatten(build_shared_models(seed).state_dict()) for seed in range(merchants)], weights


def _figures(upload: int, total: int, encrypt_s: float, aggregate_s: float, decrypt_s: float, average: np.ndarray,
             models: list[np.ndarray], weights: np.ndarray) -> dict:
    expected = np.average(np.stack(models), axis=0, weights=weights)
    return {"upload_bytes": upload, "upload_x_float32": upload / (4 * parameter_count()), "sum_bytes": total,
            "sum_x_float32": total / (4 * parameter_count()), "encrypt_s": encrypt_s, "aggregate_s": aggregate_s,
            "decrypt_s": decrypt_s, "max_error_relative_to_largest_value":
                float(np.abs(average - expected).max() / np.abs(np.stack(models)).max())}


def packed_costs(merchants: int, repeats: int) -> dict:
    """fedshop's encoding: fixed-point integers packed 7 per coefficient, seeded symmetric CKKS."""
    with tempfile.TemporaryDirectory() as folder:
        create_keys(Path(folder))
        secret = load_secret_context(Path(folder) / "secret.ctx")
        public = load_public_context(Path(folder) / "public.ctx")
    models, weights = _models(merchants)
    grid, rng = Grid(value_range_of(models[0]), float(weights.sum())), np.random.default_rng(0)

    def encrypted(index: int) -> dict:
        return encrypt(secret, grid.quantise(models[index], int(weights[index]), rng)[0])

    encrypt_s, update = timed(lambda: encrypted(0), repeats)
    updates = [update] + [encrypted(index) for index in range(1, merchants)]
    aggregate_s, total = timed(lambda: add_updates(public, [parse_update(public, u, parameter_count())
                                                            for u in updates]), repeats)
    decrypt_s, average = timed(lambda: grid.average(decrypt(secret, total, parameter_count()), float(weights.sum())),
                               repeats)
    return {"ciphertexts": len(update[CIPHERTEXT_SIZES]),
            **_figures(sum(c.nbytes for c in update.values()), sum(c.nbytes for c in total.values()), encrypt_s,
                       aggregate_s, decrypt_s, average, models, weights)}


def vector_costs(merchants: int, repeats: int) -> dict:
    """The encoding fedshop used before: TenSEAL CKKS vectors of the weighted model, 4,096 slots each,
    N=8192, two 60-bit primes, scale 2**40, symmetric, not seeded."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 60],
                         encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
    context.global_scale = 2.0**40
    models, weights = _models(merchants)
    count = -(-parameter_count() // 4096)

    def encrypted(index: int) -> list[bytes]:
        return [ts.ckks_vector(context, chunk.tolist()).serialize()
                for chunk in np.array_split(weights[index] * models[index], count)]

    def added(updates: list[list[bytes]]) -> list[bytes]:
        totals = []
        for parts in zip(*updates, strict=True):
            vectors = [ts.ckks_vector_from(context, part) for part in parts]
            totals.append(functools.reduce(lambda a, b: a + b, vectors).serialize())
        return totals

    encrypt_s, update = timed(lambda: encrypted(0), repeats)
    updates = [update] + [encrypted(index) for index in range(1, merchants)]
    aggregate_s, total = timed(lambda: added(updates), repeats)
    decrypt_s, average = timed(lambda: np.concatenate([np.asarray(ts.ckks_vector_from(context, part).decrypt())
                                                       for part in total]) / weights.sum(), repeats)
    return {"ciphertexts": count, **_figures(sum(map(len, update)), sum(map(len, total)), encrypt_s, aggregate_s,
                                             decrypt_s, average, models, weights)}


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
    merchants, repeats = (2, 1) if args.quick else (4, 3)
    he = {"packed": packed_costs(merchants, repeats), "vectors": vector_costs(merchants, repeats),
          "parameters": parameter_count(), "merchants": merchants}
    dp = dp_costs(customers=300 if args.quick else 1200, batch=128)
    before, now = he["vectors"], he["packed"]
    table = Table("measure", "CKKS vectors (before)", "packed CKKS (now)", "target",
                  title=f"fedshop privacy cost ({he['parameters']:,} parameters, {merchants} merchants; one run)")
    table.add_row("ciphertexts per update", str(before["ciphertexts"]), str(now["ciphertexts"]), "")
    table.add_row("upload / float32 bytes", f"{before['upload_x_float32']:.2f}x", f"{now['upload_x_float32']:.2f}x",
                  "<= 1x (stretch 0.5x)")
    table.add_row("upload per merchant", f"{before['upload_bytes'] / 2**20:.1f} MiB",
                  f"{now['upload_bytes'] / 2**20:.1f} MiB", "")
    table.add_row("aggregate sent back / float32 bytes", f"{before['sum_x_float32']:.2f}x",
                  f"{now['sum_x_float32']:.2f}x", "")
    table.add_row("encrypt one update", f"{before['encrypt_s']:.2f} s", f"{now['encrypt_s']:.2f} s", "")
    table.add_row(f"server sum of {merchants} updates", f"{before['aggregate_s']:.2f} s", f"{now['aggregate_s']:.2f} s",
                  "")
    table.add_row("decrypt the sum", f"{before['decrypt_s']:.2f} s", f"{now['decrypt_s']:.2f} s", "")
    table.add_row("max error of the weighted average / largest value",
                  f"{before['max_error_relative_to_largest_value']:.1e}",
                  f"{now['max_error_relative_to_largest_value']:.1e}", "<= 1e-4")
    table.add_row("plain step (Adam)", "", f"{dp['plain_step_s'] * 1e3:.1f} ms", "")
    table.add_row("DP step (ghost, exact embedding norms)", "", f"{dp['dp_step_s'] * 1e3:.1f} ms", "")
    table.add_row("DP step (ghost, Opacus' embedding norms)", "",
                  f"{dp['dp_step_opacus_builtin_norm_s'] * 1e3:.1f} ms", "")
    table.add_row("DP / plain step", "", f"{dp['dp_over_plain']:.1f}x", "<= 3x")
    table.add_row("DP (Opacus' norms) / plain step", "", f"{dp['dp_builtin_over_plain']:.1f}x", "")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"he": he, "dp": dp, "quick": args.quick}, indent=2))


if __name__ == "__main__":
    main()
