"""Encrypted aggregation: exact sums of packed integers, a weighted average within the grid's step,
compact uploads, a server that cannot decrypt, refused ciphertexts and key files."""

import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tenseal.sealapi as seal
from hypothesis import given, settings
from hypothesis import strategies as st

from fedshop.core.settings import RunSettings
from fedshop.models.parameters import flatten, parameter_count
from fedshop.models.shared import build_shared_models
from fedshop.privacy import seal_bytes
from fedshop.privacy.ckks import (
    CIPHERTEXT_SIZES,
    CIPHERTEXTS,
    CKKS,
    KEPT_HALVES,
    MAX_CIPHERTEXT_BYTES,
    SEAL_NOISE_BOUND,
    SEED_BYTES,
    SEEDS,
    CiphertextError,
    ContextError,
    add_updates,
    ciphertext_count,
    create_keys,
    decrypt,
    encrypt,
    encrypted_bytes,
    load_public_context,
    load_secret_context,
    pack,
    parse_update,
    unpack,
    unpack_sum,
)
from fedshop.privacy.fixed_point import FRACTION_BITS, MAX_WEIGHT_RATIO, Grid, GridError, value_range_of
from fedshop.privacy.seal_bytes import (
    SealFormatError,
    ciphertext_bytes,
    ciphertext_polynomials,
    ciphertext_seed,
    plaintext_coefficients,
)
from fedshop.rundir.store import RunStore
from fedshop.server.encrypted_strategy import EncryptedFedAvg
from fedshop.server.federation import strategy_for_run
from fedshop.server.strategy import UpdateRefused
from tests.messages import merchant_reply

FIELD_LIMIT = 2 ** (CKKS.field_bits - 1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("keys")
    create_keys(folder)
    return load_secret_context(folder / "secret.ctx"), load_public_context(folder / "public.ctx"), folder


def test_the_packing_fits_the_modulus_and_the_noise_of_the_largest_sum() -> None:
    assert CKKS.noise_bits + CKKS.fields * CKKS.field_bits < CKKS.data_modulus_bits - 1
    assert SEAL_NOISE_BOUND * CKKS.max_merchants + 2**CKKS.flood_bits < 2 ** (CKKS.noise_bits - 1)
    assert MAX_WEIGHT_RATIO * 2**FRACTION_BITS + CKKS.max_merchants < FIELD_LIMIT
    assert sum(CKKS.coeff_mod_bit_sizes) <= seal.CoeffModulus.MaxBitCount(CKKS.poly_modulus_degree,
                                                                          seal.SEC_LEVEL_TYPE.TC128)


@settings(max_examples=15, deadline=None)
@given(size=st.integers(1, 2 * CKKS.values_per_ciphertext + 5), merchants=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_the_sum_of_encrypted_integers_is_exact(keys, size: int, merchants: int, seed: int) -> None:
    secret, public, _ = keys
    rng = np.random.default_rng(seed)
    parts = [rng.integers(-FIELD_LIMIT // merchants, FIELD_LIMIT // merchants, size) for _ in range(merchants)]
    total = add_updates(public, [parse_update(public, encrypt(secret, part), size) for part in parts])
    np.testing.assert_array_equal(decrypt(secret, total, size), np.sum(parts, axis=0))


def test_the_largest_sum_stays_exact(keys) -> None:
    """``max_merchants`` updates, each encrypted afresh (a sum adds each ciphertext once: a node refuses a
    repeated seed), stay exact with the flooding added; the worst case of their noise, every error in one
    direction, is the arithmetic of the first test."""
    secret, public, _ = keys
    values = np.random.default_rng(0).integers(-FIELD_LIMIT // CKKS.max_merchants, FIELD_LIMIT // CKKS.max_merchants,
                                               CKKS.values_per_ciphertext)
    updates = [parse_update(public, encrypt(secret, values), values.size) for _ in range(CKKS.max_merchants)]
    total = add_updates(public, updates)
    np.testing.assert_array_equal(decrypt(secret, total, values.size), CKKS.max_merchants * values)
    with pytest.raises(CiphertextError, match=f"one sum adds at most {CKKS.max_merchants}"):
        add_updates(public, [updates[0]] * (CKKS.max_merchants + 1))


def test_no_secret_key_or_plaintext_is_left_in_the_scratch_folders(tmp_path: Path, monkeypatch) -> None:
    """SEAL reads and writes its objects through files; a node killed between two calls leaves its scratch
    folder behind (50 of them piled up in /tmp over a day of test runs), so no file may outlive its call:
    not the secret key loaded, nor an update's plaintext encoded before it is encrypted."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    create_keys(tmp_path / "keys")
    secret = load_secret_context(tmp_path / "keys" / "secret.ctx")
    public = load_public_context(tmp_path / "keys" / "public.ctx")
    update = encrypt(secret, np.arange(50))
    np.testing.assert_array_equal(decrypt(secret, add_updates(public, [parse_update(public, update, 50)]), 50),
                                  np.arange(50))
    folders = list((tmp_path / "scratch").glob("fedshop-seal-*"))
    assert folders and not [path for folder in folders for path in folder.iterdir()]


@settings(max_examples=12, deadline=None)
@given(size=st.integers(1, 9000), merchants=st.integers(1, 4), seed=st.integers(0, 2**31),
       scale=st.sampled_from([1e-3, 0.1, 1.0, 30.0]), known=st.floats(0.4, 1.0))
def test_decrypted_average_equals_the_plaintext_weighted_average(keys, size: int, merchants: int, seed: int,
                                                                 scale: float, known: float) -> None:
    """Within one step of the grid per merchant, whatever the weights and however well the server
    guessed the total weight (``known``)."""
    secret, public, _ = keys
    rng = np.random.default_rng(seed)
    models = [rng.normal(0, scale, size) for _ in range(merchants)]
    weights = rng.integers(1, 5000, merchants)
    grid = Grid(value_range_of(np.concatenate(models)), float(weights.sum()) / (known * MAX_WEIGHT_RATIO) * 1.001)
    updates = [parse_update(public, encrypt(secret, grid.quantise(m, int(w), rng)[0]), size)
               for w, m in zip(weights, models, strict=True)]
    average = grid.average(decrypt(secret, add_updates(public, updates), size), float(weights.sum()))
    expected = np.average(np.stack(models), axis=0, weights=weights)
    bound = merchants * grid.step * grid.weight_scale / weights.sum()
    assert np.abs(average - expected).max() <= bound
    assert np.abs(average - expected).max() <= 1e-4 * np.abs(np.stack(models)).max()


def test_stochastic_rounding_is_unbiased_and_clipping_is_counted() -> None:
    grid = Grid(value_range=1.0, weight_scale=10.0)
    integers, clipped = grid.quantise(np.full(200_000, 0.3 * grid.step), 10, np.random.default_rng(0))
    assert clipped == 0 and abs(integers.mean() - 0.3) < 0.01 and set(np.unique(integers)) == {0, 1}
    _, clipped = grid.quantise(np.array([0.5, 1.5, -2.0, np.nan]), 10, np.random.default_rng(0))
    assert clipped == 3
    with pytest.raises(GridError, match="does not fit the round's weight scale 10"):
        grid.quantise(np.zeros(3), 31, np.random.default_rng(0))
    with pytest.raises(GridError, match="overflows the round's weight scale"):
        grid.average(np.zeros(3, np.int64), 31.0)
    assert value_range_of(np.array([0.3, -1.1, np.inf])) == 4.0 and value_range_of(np.zeros(2)) == 1.0


def test_an_upload_costs_less_than_float32_and_travels_as_two_arrays(keys) -> None:
    secret, _, _ = keys
    update = encrypt(secret, np.zeros(parameter_count(), np.int64))
    assert sorted(update) == sorted((CIPHERTEXTS, CIPHERTEXT_SIZES))
    assert len(update[CIPHERTEXT_SIZES]) == ciphertext_count(parameter_count())
    assert update[CIPHERTEXTS].size < 0.95 * 4 * parameter_count()
    assert encrypted_bytes()[0] == update[CIPHERTEXT_SIZES][0]


def test_the_server_context_cannot_decrypt(keys) -> None:
    secret, public, folder = keys
    ciphertexts = encrypt(secret, np.ones(10, np.int64))
    with pytest.raises(ContextError, match="needs the merchant's secret context"):
        decrypt(public, ciphertexts, 10)
    with pytest.raises(ContextError, match="needs the merchant's secret context"):
        encrypt(public, np.ones(10, np.int64))
    assert not public.has_secret_key and b"secret" not in (folder / "public.ctx").read_bytes()
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


def test_key_files_of_other_parameters_or_formats_are_refused(keys, tmp_path: Path) -> None:
    _, _, folder = keys
    with np.load(folder / "public.ctx") as saved:
        members = dict(saved)
    members["parameters"] = members["parameters"][:-8]
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    (tmp_path / "other.ctx").write_bytes(buffer.getvalue())
    with pytest.raises(ContextError, match="was made with other CKKS parameters"):
        load_public_context(tmp_path / "other.ctx")
    (tmp_path / "text.ctx").write_text("not a context")
    with pytest.raises(ContextError, match="not a fedshop context file"):
        load_public_context(tmp_path / "text.ctx")
    with pytest.raises(ContextError, match="no such context file"):
        load_public_context(tmp_path / "missing.ctx")


def _with_ciphertext(update: dict[str, np.ndarray], index: int, data: bytes) -> dict[str, np.ndarray]:
    parts = unpack(update, len(update[CIPHERTEXT_SIZES]))
    parts[index] = data
    return pack(parts)


def _foreign_ciphertext() -> bytes:
    parameters = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parameters.set_poly_modulus_degree(4096)
    parameters.set_coeff_modulus(seal.CoeffModulus.Create(4096, [40, 20, 40]))
    context = seal.SEALContext(parameters, True, seal.SEC_LEVEL_TYPE.TC128)
    ciphertext = seal.Ciphertext(context)
    seal.Encryptor(context, seal.KeyGenerator(context).secret_key()).encrypt_zero_symmetric(ciphertext)
    path = Path(__file__).parent / ".foreign-ciphertext"
    try:
        ciphertext.save(str(path))
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def test_truncated_foreign_altered_and_miscounted_ciphertexts_are_refused(keys) -> None:
    secret, public, _ = keys
    size = CKKS.values_per_ciphertext + 5
    good = encrypt(secret, np.ones(size, np.int64))
    first, second = unpack(good, 2)
    with pytest.raises(CiphertextError, match="ciphertext 1 cannot be read under context .*truncated"):
        parse_update(public, _with_ciphertext(good, 1, second[:1000]), size)
    with pytest.raises(CiphertextError, match="ciphertext 0 cannot be read under context"):
        parse_update(public, _with_ciphertext(good, 0, _foreign_ciphertext()), size)
    other = encrypt(secret, np.ones(size, np.int64))
    sum_of_two = unpack_sum(add_updates(public, [parse_update(public, u, size) for u in (good, other)]), 2)[0][0]
    with pytest.raises(CiphertextError, match="ciphertext 0 is not seeded"):
        parse_update(public, _with_ciphertext(good, 0, sum_of_two), size)
    polynomials = ciphertext_polynomials(sum_of_two)
    out_of_range = polynomials.copy()
    out_of_range[0, 0, 0] = np.iinfo(np.uint64).max  # no coefficient can exceed its prime
    with pytest.raises(CiphertextError, match="ciphertext 0 cannot be read"):
        parse_update(public, _with_ciphertext(good, 0, ciphertext_bytes(sum_of_two, out_of_range, True)), size)
    with pytest.raises(CiphertextError, match="ciphertext 0 is not a fresh fedshop encryption"):
        parse_update(public, _with_ciphertext(good, 0, ciphertext_bytes(sum_of_two, polynomials, False)), size)
    with pytest.raises(CiphertextError, match="the update repeats a seed"):
        parse_update(public, pack([first, first]), size)
    with pytest.raises(CiphertextError, match="expected 3 ciphertexts"):
        parse_update(public, good, 2 * CKKS.values_per_ciphertext + 1)
    with pytest.raises(ValueError, match="below 2\\*\\*22 in magnitude"):
        encrypt(secret, np.array([FIELD_LIMIT]))
    assert first != second


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200), header=st.sampled_from([b"", b"\x5e\xa1\x10\x04\x03\x00\x00\x00",
                                                              b"\x5e\xa1\x10\x04\x03\x02\x00\x00"]))
def test_any_bytes_are_a_seal_object_or_refused_by_name(data: bytes, header: bytes) -> None:
    """Bytes that may start like a SEAL header (uncompressed or zstd) and whose size field matches."""
    saved = header + (len(header) + 8 + len(data)).to_bytes(8, "little") + data if header else data
    for parse in (ciphertext_polynomials, plaintext_coefficients, ciphertext_seed):
        with pytest.raises(SealFormatError):
            parse(saved)


def test_a_compressed_body_that_inflates_past_any_object_is_refused_before_it_fills_memory() -> None:
    """A merchant's update is read by the server's Python too (its seeds): 8 KB of zstd inflated to
    256 MiB there, and 24 such frames fit in one ciphertext's bytes (a hostile review)."""
    zeros = bytes(4 * seal_bytes.MAX_BODY_BYTES)
    for mode, body in ((1, zlib.compress(zeros)), (2, pa.compress(zeros, codec="zstd", asbytes=True))):
        saved = struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 3, mode, 0, 16 + len(body)) + body
        for parse in (ciphertext_polynomials, plaintext_coefficients, ciphertext_seed):
            with pytest.raises(SealFormatError, match=f"more than {seal_bytes.MAX_BODY_BYTES} bytes"):
                parse(saved)


@settings(max_examples=20, deadline=None)
@given(size=st.integers(2, 3), seed=st.integers(0, 2**31), ntt=st.booleans())
def test_written_ciphertexts_read_back_to_their_polynomials(keys, size: int, seed: int, ntt: bool) -> None:
    secret, _, _ = keys
    like = unpack(encrypt(secret, np.ones(3, np.int64)), 1)[0]
    polynomials = np.random.default_rng(seed).integers(0, 2**60, (size, 3, CKKS.poly_modulus_degree), dtype=np.uint64)
    np.testing.assert_array_equal(ciphertext_polynomials(ciphertext_bytes(like, polynomials, ntt)), polynomials)


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
        "an encrypted update is the arrays": {**good, "ct.00000": good[CIPHERTEXTS]},
        "ciphertexts is float64": {**good, CIPHERTEXTS: good[CIPHERTEXTS].astype(float)},
        "ciphertext-sizes is int32": {**good, CIPHERTEXT_SIZES: good[CIPHERTEXT_SIZES].astype(np.int32)},
        "sizes add up to 5 bytes, but ciphertexts holds 4": {**good, CIPHERTEXTS: good[CIPHERTEXTS][:4]},
        "ciphertext 1 has 0 bytes": pack([b"abcde", b""]),
    }
    for message, arrays in cases.items():
        with pytest.raises(CiphertextError, match=message):
            unpack(arrays, 2)


def test_server_refuses_updates_of_another_context_grid_or_beyond_the_weight_scale(keys, tmp_path: Path) -> None:
    secret, public, _ = keys
    strategy = EncryptedFedAvg(RunStore(tmp_path), RunSettings(run_dir=str(tmp_path)), 0, public)
    strategy.weight_scale = 4.0
    model = flatten(build_shared_models(1).state_dict())
    grid = Grid(value_range_of(model), strategy.weight_scale)
    update = encrypt(secret, grid.quantise(model, 3, np.random.default_rng(0))[0])

    def reply(examples: int = 3, context_id: str = public.context_id, **grid_metrics: float):
        metrics = {"num-examples": examples, "weight-scale": grid.weight_scale, "value-range": grid.value_range}
        return merchant_reply(update, {**metrics, **grid_metrics}, context_id=context_id)

    strategy.examples, strategy.value_range = {2: 3}, grid.value_range  # its count answer; most merchants' range
    accepted = strategy.accept_update(reply()).ciphertexts
    assert len(accepted) == ciphertext_count(parameter_count())
    with pytest.raises(UpdateRefused, match=f"encrypted under context feedfacefeedface, but this federation "
                                            f"uses context {public.context_id}"):
        strategy.accept_update(reply(context_id="feedfacefeedface"))
    with pytest.raises(UpdateRefused, match="written for a weight scale of 8.0, but this round's is 4"):
        strategy.accept_update(reply(**{"weight-scale": 8.0}))
    with pytest.raises(UpdateRefused, match="written for a value range of 0.5, but most of the round's merchants"):
        strategy.accept_update(reply(**{"value-range": 0.5}))
    with pytest.raises(UpdateRefused, match="it claims 10 examples, but answered 3 to the round's count query"):
        strategy.accept_update(reply(examples=10))
    strategy.examples = {2: 10}
    with pytest.raises(UpdateRefused, match="would take the round's total weight past 3 times the weight scale 4"):
        strategy.accept_update(reply(examples=10))
    strategy.examples = {2: 3}
    short = pack(unpack(update, len(accepted))[:-1])
    with pytest.raises(UpdateRefused, match=f"expected {len(accepted)} ciphertexts, got {len(accepted) - 1}"):
        strategy.accept_update(merchant_reply(short, {"num-examples": 3, "weight-scale": 4.0,
                                                      "value-range": grid.value_range}, context_id=public.context_id))
    with pytest.raises(UpdateRefused, match="repeat seeds of an update already accepted this round"):
        strategy.accept_update(reply())
    aliased = pack([_seed_header_reserved(part) for part in unpack(update, len(accepted))])
    assert unpack(aliased, len(accepted)) != unpack(update, len(accepted))
    with pytest.raises(UpdateRefused, match="repeat seeds of an update already accepted this round"):
        strategy.accept_update(merchant_reply(aliased, {"num-examples": 3, "weight-scale": 4.0,
                                                        "value-range": grid.value_range}, context_id=public.context_id))


def _seed_header_reserved(saved: bytes) -> bytes:
    """A seeded ciphertext with the reserved bytes of its seed's SEAL header set: SEAL never reads them and
    draws the same random half, so byte-distinct seeds would be one seed (a reviewer's alias)."""
    body, version = seal_bytes._body(saved)
    reserved = len(body) - 81 + 6  # the seed's saved form: an 81-byte object, its header's reserved bytes at 6
    return seal_bytes._saved(body[:reserved] + b"\x07\x00" + body[reserved + 2:], version)


def test_a_node_draws_a_sums_random_halves_from_its_seeds_never_from_the_server(keys) -> None:
    """The server's public context writes ciphertexts of its own: one whose random half was the small
    constant 32 * 2**noise_bits decrypted to 32 times the secret key's coefficients (-32, 0 or 32), which a
    node's answers about the model it decrypted would read out. A node draws the halves from the summed
    updates' seeds, refuses a sum without them, and one that repeats a seed."""
    secret, public, _ = keys
    size = CKKS.values_per_ciphertext
    parts = [np.arange(size) % 1000, np.full(size, -7)]
    total = add_updates(public, [parse_update(public, encrypt(secret, part), size) for part in parts])
    summed = unpack_sum(total, 1)[0][0]
    polynomials = ciphertext_polynomials(summed)
    polynomials[1] = [[(32 << CKKS.noise_bits) % q] * CKKS.poly_modulus_degree for q in secret.moduli]
    forged_half = {**total, **pack([ciphertext_bytes(summed, polynomials, True)])}
    np.testing.assert_array_equal(decrypt(secret, forged_half, size), np.sum(parts, axis=0))
    with pytest.raises(CiphertextError, match="an encrypted sum is the arrays .*'seeds'"):
        decrypt(secret, pack([ciphertext_bytes(summed, polynomials, True)]), size)
    with pytest.raises(CiphertextError, match="the sum repeats a seed"):
        decrypt(secret, {**total, SEEDS: total[SEEDS][:, [0, 0]]}, size)
    two = add_updates(public, [parse_update(public, encrypt(secret, np.ones(2 * size, np.int64)), 2 * size)])
    with pytest.raises(CiphertextError, match="the sum repeats a seed"):  # one merchant's, at its other place
        decrypt(secret, {**two, SEEDS: two[SEEDS][[0, 0]]}, 2 * size)
    with pytest.raises(CiphertextError, match="seeds is uint8\\[1, 2, 64\\]"):
        decrypt(secret, {**total, SEEDS: total[SEEDS][:, :, :64]}, size)
    with pytest.raises(CiphertextError, match="seeds is int64\\[1, 2, 65\\]"):
        decrypt(secret, {**total, SEEDS: total[SEEDS].astype(np.int64)}, size)
    unknown_kind = total[SEEDS].copy()
    unknown_kind[0, 0, 0] = 0  # the generator's kind: SEAL knows 1 (BLAKE2xb) and 2 (SHAKE256)
    with pytest.raises(CiphertextError, match="ciphertext 0 of the sum: its seeds cannot be drawn from"):
        decrypt(secret, {**total, SEEDS: unknown_kind}, size)


def test_which_way_a_value_rounds_at_the_edge_is_a_coin_toss(keys) -> None:
    """A server that shifts a sum by half the low bits would learn the sign of each coefficient's
    encryption noise from which way it rounds (an oracle on the key); the fresh noise a node adds to
    the low bits before rounding them away makes it a coin toss."""
    secret, public, _ = keys
    size = CKKS.values_per_ciphertext
    total = add_updates(public, [parse_update(public, encrypt(secret, np.zeros(size, np.int64)), size)])
    polynomials = ciphertext_polynomials(unpack_sum(total, 1)[0][0])
    half = 1 << (CKKS.noise_bits - 1)  # the constant polynomial: the same in NTT form, at the first coefficient
    polynomials[0] = (polynomials[0] + np.uint64(half)) % np.array(secret.moduli, np.uint64)[:, None]
    shifted = {**total, **pack([ciphertext_bytes(unpack_sum(total, 1)[0][0], polynomials, True)])}
    rounded = {int(decrypt(secret, shifted, size)[0]) for _ in range(32)}  # one value: odds of 2 in 2**32
    assert rounded == {0, 1}


def test_a_node_keeps_the_last_sums_halves_and_draws_each_as_seal_does(keys) -> None:
    """The kept sum of halves is the sum SEAL's draws give, one per set of seeds, and the oldest goes first."""
    secret, _, _ = keys
    machinery = secret._machinery
    rng = np.random.default_rng(3)
    sets = [np.concatenate([np.ones((2, 1), np.uint8), rng.integers(0, 256, (2, SEED_BYTES - 1), np.uint8)], axis=1)
            for _ in range(KEPT_HALVES + 1)]  # kind 1 (BLAKE2xb) and a random 512-bit seed, two merchants each
    first = machinery.summed_half(sets[0])
    drawn = [machinery.random_half(seed.tobytes()) for seed in sets[0]]
    np.testing.assert_array_equal(first, (drawn[0] + drawn[1]) % machinery.primes)
    assert not np.array_equal(first, machinery.summed_half(sets[1]))
    for seeds in sets[2:]:
        machinery.summed_half(seeds)
    assert len(machinery.halves) == KEPT_HALVES and sets[0].tobytes() not in machinery.halves


def test_a_run_resumes_only_from_a_sum_the_merchants_will_decrypt(keys, tmp_path: Path) -> None:
    """A checkpoint saved before sums carried their seeds is refused when the run starts, by name,
    rather than by every node after the round's quorum wait."""
    secret, _, folder = keys
    settings = RunSettings(run_dir=str(tmp_path / "run"), he=True, public_context=str(folder / "public.ctx"))
    store = RunStore(settings.run_dir)
    store.open(settings)
    without_seeds = encrypt(secret, np.zeros(parameter_count(), np.int64))
    store.save_checkpoint(1, without_seeds, {"context_id": secret.context_id, "aggregate_weight": 1.0,
                                             "aggregate_scale": 1.0, "aggregate_range": 1.0})
    with pytest.raises(ContextError, match="the checkpoint of round 1 is not a sum the merchants will decrypt "
                                           "\\(an encrypted sum is the arrays"):
        strategy_for_run(store, settings, 1)
