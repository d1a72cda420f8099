"""Encrypted aggregation: exact weighted sums, a server that cannot decrypt, refused ciphertexts."""

from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from fedshop.settings import RunSettings
from models.parameters import flatten, parameter_count
from models.shared import build_shared_models
from privacy.ckks import (
    CIPHERTEXT_KEY,
    CKKS,
    CiphertextError,
    ContextError,
    add_updates,
    create_keys,
    decrypt,
    encrypt,
    load_public_context,
    load_secret_context,
    parse_update,
)
from server.encrypted_strategy import EncryptedFedAvg
from server.run_store import RunStore
from server.strategy import UpdateRefused
from tests.messages import merchant_reply


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("keys")
    create_keys(folder)
    return load_secret_context(folder / "secret.ctx"), load_public_context(folder / "public.ctx"), folder


@settings(max_examples=20, deadline=None)
@given(size=st.integers(1, 9000), merchants=st.integers(1, 4), seed=st.integers(0, 2**31),
       scale=st.sampled_from([1e-3, 0.1, 1.0, 30.0]))
def test_decrypted_sum_equals_plaintext_weighted_average(keys, size: int, merchants: int, seed: int,
                                                         scale: float) -> None:
    secret, public, _ = keys
    rng = np.random.default_rng(seed)
    models = [rng.normal(0, scale, size) for _ in range(merchants)]
    weights = rng.integers(1, 5000, merchants).astype(float)
    updates = [parse_update(public, encrypt(secret, w * m), size) for w, m in zip(weights, models, strict=True)]
    average = decrypt(secret, add_updates(updates), size) / weights.sum()
    expected = np.average(np.stack(models), axis=0, weights=weights)
    np.testing.assert_allclose(average, expected, rtol=0, atol=1e-6)


def test_the_server_context_cannot_decrypt(keys) -> None:
    secret, public, folder = keys
    ciphertexts = encrypt(secret, np.ones(10))
    with pytest.raises(ContextError, match="needs the merchant's secret context"):
        decrypt(public, ciphertexts, 10)
    vector = parse_update(public, ciphertexts, 10)[0]
    with pytest.raises(ValueError, match="doesn't hold a secret_key"):
        vector.decrypt()
    assert not public.has_secret_key and not public.context.is_private()
    with pytest.raises(ContextError, match="holds a secret key; the server must only be given the public"):
        load_public_context(folder / "secret.ctx")


def test_merchant_secret_context_must_match_its_manifest(keys, tmp_path: Path) -> None:
    _, _, folder = keys
    create_keys(tmp_path)
    (tmp_path / "secret.ctx").write_bytes((folder / "secret.ctx").read_bytes())
    with pytest.raises(ContextError, match="not the secret context described by"):
        load_secret_context(tmp_path / "secret.ctx")
    with pytest.raises(ContextError, match="holds no secret key"):
        load_secret_context(folder / "public.ctx")


def test_truncated_foreign_and_miscounted_ciphertexts_are_refused(keys) -> None:
    secret, public, _ = keys
    good = encrypt(secret, np.ones(CKKS.slots + 5))
    truncated = {**good, CIPHERTEXT_KEY.format(1): good[CIPHERTEXT_KEY.format(1)][:1000]}
    with pytest.raises(CiphertextError, match="ct.00001 cannot be read under context .*truncated"):
        parse_update(public, truncated, CKKS.slots + 5)
    other = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 20, 40])
    other.global_scale = 2.0**20
    foreign = {**good, CIPHERTEXT_KEY.format(0): np.frombuffer(ts.ckks_vector(other, [1.0]).serialize(), np.uint8)}
    with pytest.raises(CiphertextError, match="ct.00000 cannot be read under context"):
        parse_update(public, foreign, CKKS.slots + 5)
    with pytest.raises(CiphertextError, match="expected 3 ciphertexts"):
        parse_update(public, good, 2 * CKKS.slots + 1)
    with pytest.raises(CiphertextError, match="ct.00000 holds 2051 values, expected 2050"):
        parse_update(public, good, CKKS.slots + 4)


def test_server_refuses_updates_made_under_another_context(keys, tmp_path: Path) -> None:
    secret, public, _ = keys
    strategy = EncryptedFedAvg(RunStore(tmp_path), RunSettings(run_dir=str(tmp_path)), 0, public)
    update = encrypt(secret, 3 * flatten(build_shared_models(1).state_dict()))
    accepted = strategy.accept_update(merchant_reply(update, {"num-examples": 3}, context_id=public.context_id))
    assert len(accepted) == len(update)
    with pytest.raises(UpdateRefused, match=f"encrypted under context feedfacefeedface, but this federation "
                                            f"uses context {public.context_id}"):
        strategy.accept_update(merchant_reply(update, {"num-examples": 3}, context_id="feedfacefeedface"))
    short = dict(list(update.items())[:-1])
    with pytest.raises(UpdateRefused, match=f"expected {len(update)} ciphertexts"):
        strategy.accept_update(merchant_reply(short, {"num-examples": 3}, context_id=public.context_id))
    assert parameter_count() == flatten(build_shared_models(1).state_dict()).size
