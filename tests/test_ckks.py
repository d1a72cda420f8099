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
    CIPHERTEXT_SIZES,
    CIPHERTEXTS,
    CKKS,
    MAX_CIPHERTEXT_BYTES,
    CiphertextError,
    ContextError,
    add_updates,
    ciphertext_count,
    create_keys,
    decrypt,
    encrypt,
    load_public_context,
    load_secret_context,
    pack,
    parse_update,
    unpack,
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


def _with_ciphertext(update: dict[str, np.ndarray], index: int, data: bytes) -> dict[str, np.ndarray]:
    parts = unpack(update, len(update[CIPHERTEXT_SIZES]))
    parts[index] = data
    return pack(parts)


def test_truncated_foreign_and_miscounted_ciphertexts_are_refused(keys) -> None:
    secret, public, _ = keys
    good = encrypt(secret, np.ones(CKKS.slots + 5))
    truncated = _with_ciphertext(good, 1, unpack(good, 2)[1][:1000])
    with pytest.raises(CiphertextError, match="ciphertext 1 cannot be read under context .*truncated"):
        parse_update(public, truncated, CKKS.slots + 5)
    other = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 20, 40])
    other.global_scale = 2.0**20
    foreign = _with_ciphertext(good, 0, ts.ckks_vector(other, [1.0]).serialize())
    with pytest.raises(CiphertextError, match="ciphertext 0 cannot be read under context"):
        parse_update(public, foreign, CKKS.slots + 5)
    with pytest.raises(CiphertextError, match="expected 3 ciphertexts"):
        parse_update(public, good, 2 * CKKS.slots + 1)
    with pytest.raises(CiphertextError, match="ciphertext 0 holds 2051 values, expected 2050"):
        parse_update(public, good, CKKS.slots + 4)


def test_an_encrypted_model_travels_as_two_arrays_whatever_its_size(keys) -> None:
    """Flower moves each array of a message as objects of its own: one array per ciphertext made a
    real round spend most of its time in transit."""
    secret, _, _ = keys
    update = encrypt(secret, np.ones(parameter_count()))
    assert sorted(update) == sorted((CIPHERTEXTS, CIPHERTEXT_SIZES))
    assert len(update[CIPHERTEXT_SIZES]) == ciphertext_count(parameter_count()) > 100


@settings(max_examples=50, deadline=None)
@given(parts=st.lists(st.binary(min_size=1, max_size=40), max_size=6))
def test_packed_ciphertexts_unpack_to_themselves(parts: list[bytes]) -> None:
    assert unpack(pack(parts), len(parts)) == parts


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=60), sizes=st.lists(st.integers(-2**62, 2**62) | st.integers(-3, 70), max_size=6),
       count=st.integers(0, 6))
def test_any_packing_splits_exactly_or_is_refused(data: bytes, sizes: list[int], count: int) -> None:
    arrays = {CIPHERTEXTS: np.frombuffer(data, np.uint8), CIPHERTEXT_SIZES: np.array(sizes, np.int64)}
    try:
        parts = unpack(arrays, count)
    except CiphertextError:
        return
    assert len(parts) == count and [len(p) for p in parts] == sizes and b"".join(parts) == data
    assert all(0 < len(p) <= MAX_CIPHERTEXT_BYTES for p in parts)


def test_packings_of_the_wrong_shape_are_refused_by_name() -> None:
    good = pack([b"abc", b"de"])
    cases = {
        "an encrypted model is the arrays": {**good, "ct.00000": good[CIPHERTEXTS]},
        "ciphertexts is float64": {**good, CIPHERTEXTS: good[CIPHERTEXTS].astype(float)},
        "ciphertext-sizes is int32": {**good, CIPHERTEXT_SIZES: good[CIPHERTEXT_SIZES].astype(np.int32)},
        "sizes add up to 5 bytes, but ciphertexts holds 4": {**good, CIPHERTEXTS: good[CIPHERTEXTS][:4]},
        "ciphertext 1 has 0 bytes": pack([b"abcde", b""]),
    }
    for message, arrays in cases.items():
        with pytest.raises(CiphertextError, match=message):
            unpack(arrays, 2)


def test_server_refuses_updates_made_under_another_context(keys, tmp_path: Path) -> None:
    secret, public, _ = keys
    strategy = EncryptedFedAvg(RunStore(tmp_path), RunSettings(run_dir=str(tmp_path)), 0, public)
    update = encrypt(secret, 3 * flatten(build_shared_models(1).state_dict()))
    accepted = strategy.accept_update(merchant_reply(update, {"num-examples": 3}, context_id=public.context_id))
    assert len(accepted) == ciphertext_count(parameter_count())
    with pytest.raises(UpdateRefused, match=f"encrypted under context feedfacefeedface, but this federation "
                                            f"uses context {public.context_id}"):
        strategy.accept_update(merchant_reply(update, {"num-examples": 3}, context_id="feedfacefeedface"))
    short = pack(unpack(update, len(accepted))[:-1])
    with pytest.raises(UpdateRefused, match=f"expected {len(accepted)} ciphertexts, got {len(accepted) - 1}"):
        strategy.accept_update(merchant_reply(short, {"num-examples": 3}, context_id=public.context_id))
    assert parameter_count() == flatten(build_shared_models(1).state_dict()).size
