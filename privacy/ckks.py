"""Encrypted aggregation with CKKS (SEAL, through TenSEAL's ``tenseal.sealapi``): the one definition
of the parameters, the key files and the compact encoding of an update.

The key steward (a merchant or an auditor, never the operator) runs ``fedshop keys init`` once:

* ``secret.ctx`` — the parameters, the key set's id and the secret key, handed to merchants out of band;
* ``public.ctx`` — the parameters and the key set's id, nothing that decrypts, for the server;
* ``context.json`` — the context id (a digest of ``public.ctx``), a digest of ``secret.ctx`` and
  the parameters; it travels with ``secret.ctx`` so a merchant's node can check it holds the
  federation's key.

**The compact encoding.** An update is a vector of signed fixed-point integers
(``fedshop.privacy.fixed_point``). Seven of them are packed into each coefficient of a plaintext polynomial,
``fields`` fields of ``field_bits`` bits above ``noise_bits`` low bits, in the coefficient form of
CKKS's ring (not CKKS's approximate slot encoding), so the sum of the merchants' ciphertexts decrypts
to the exact sum of their integers: the encryption noise of up to ``max_merchants`` ciphertexts stays
in the low bits, which are rounded away, and each field's sum stays within its bits (the fixed-point
grid leaves headroom for it). Merchants encrypt with symmetric CKKS and send each ciphertext seeded:
its random half is replaced by the seed it was drawn from (SEAL regenerates it on load), so a
ciphertext costs one polynomial of three 60-bit primes for 7 x 8192 values: 0.86 x float32. The
server adds ciphertexts; a sum is no longer seeded, so it travels at twice that, with the seeds of
the updates it adds.

**What a node decrypts.** The server's public context is enough to write a ciphertext of its own, and
one whose random half it chose small decrypts to that half times the secret key: a node's answers
about such a model would read the key out. So a node never decrypts the random half it is sent: it
draws the halves of the summed updates again from their seeds (a seed travels as SEAL's generator
kind and seed, without the header, whose unread bytes would let two byte strings be one seed), refuses
a sum that repeats a seed anywhere (a repeated half would scale the encryption noise into the values),
and adds fresh noise to the low bits before rounding them away (``flood_bits``), so that where the
rounding falls says little of the encryption noise. What a sum can then decrypt to is a sum of
ciphertexts drawn from distinct seeds plus values the server chose; a seed no merchant sent adds the
key times a random polynomial, which the server cannot cancel.

An encrypted update travels and is stored as two arrays (``pack``): the ciphertexts' bytes back to
back, and each one's size; a sum adds a third, the seeds (``SEEDS``). Flower moves every array of a
message as objects of its own, one request each.
"""

import hashlib
import io
import itertools
import json
import math
import secrets
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tenseal.sealapi as seal

from fedshop.core.files import write_secret
from fedshop.privacy.seal_bytes import (
    SealFormatError,
    ciphertext_bytes,
    ciphertext_polynomials,
    ciphertext_seed,
    plaintext_bytes,
    plaintext_coefficients,
    seeded_ciphertext_bytes,
)

SEAL_NOISE_BOUND = 21  # SEAL's encryption error: a centred binomial sample, |e| <= 21 per coefficient
SEED_BYTES = 65  # what SEAL's generator info holds in place of a random half: its kind and a 512-bit seed
KEPT_HALVES = 32  # summed halves a node keeps, the last ones drawn (192 KiB each): the demo model has 15 ciphertexts


@dataclass(frozen=True)
class CkksParameters:
    """CKKS parameters for an addition-only workload, and how an update is packed into them."""

    poly_modulus_degree: int = 8192
    # Three 60-bit primes hold the ciphertexts; the fourth, SEAL's special prime, only serves key
    # switching, which an addition never does. 218 bits: the most SEAL allows at 128-bit security.
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60, 60, 38)
    security_level_bits: int = 128
    max_merchants: int = 1024  # ciphertexts one sum may add: their noise must stay below the low bits
    noise_bits: int = 16
    fields: int = 7  # values per coefficient
    field_bits: int = 23  # a value's bits in a coefficient: the signed sum of every merchant's integer
    flood_bits: int = 13  # fresh noise a node adds to the low bits before rounding: the largest sum's stays below

    @property
    def values_per_ciphertext(self) -> int:
        return self.poly_modulus_degree * self.fields

    @property
    def data_modulus_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes[:-1])


CKKS = CkksParameters()
SECRET_FILE, PUBLIC_FILE, MANIFEST_FILE = "secret.ctx", "public.ctx", "context.json"
CIPHERTEXTS, CIPHERTEXT_SIZES, SEEDS = "ciphertexts", "ciphertext-sizes", "seeds"
MAX_CIPHERTEXT_BYTES = 2 * CKKS.poly_modulus_degree * (len(CKKS.coeff_mod_bit_sizes) - 1) * 8 + 4096
_PARAMETERS, _KEY_SET, _SECRET_KEY = "parameters", "key-set", "secret-key"


class ContextError(ValueError):
    """A context file is missing, of the wrong kind, or not the federation's."""


class CiphertextError(ValueError):
    """An encrypted update cannot be used."""


def _encryption_parameters() -> seal.EncryptionParameters:
    parameters = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parameters.set_poly_modulus_degree(CKKS.poly_modulus_degree)
    parameters.set_coeff_modulus(seal.CoeffModulus.Create(CKKS.poly_modulus_degree, list(CKKS.coeff_mod_bit_sizes)))
    return parameters


class _Files:
    """A scratch folder: the SEAL API saves and loads its objects only through files. Each file is removed
    as soon as it is read: a node killed between two calls (its folder outlives it) must not leave a secret
    key or an update's plaintext on disk."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="fedshop-seal-")
        self._path = Path(self._folder.name) / "object"

    def save(self, item) -> bytes:
        try:
            item.save(str(self._path))
            return self._path.read_bytes()
        finally:
            self._path.unlink(missing_ok=True)

    def load(self, item, context: seal.SEALContext, data: bytes):
        try:
            self._path.write_bytes(data)
            item.load(context, str(self._path))
            return item
        finally:
            self._path.unlink(missing_ok=True)


@dataclass(frozen=True, eq=False)
class KeyContext:
    """A loaded key set: the SEAL context, its id and, for a merchant, the secret key."""

    context: seal.SEALContext
    context_id: str
    secret_key: seal.SecretKey | None = None

    @property
    def has_secret_key(self) -> bool:
        return self.secret_key is not None

    @cached_property
    def moduli(self) -> list[int]:
        return [modulus.value() for modulus in self.context.first_context_data().parms().coeff_modulus()]

    @cached_property
    def _machinery(self) -> "_Machinery":
        return _Machinery(self)


def context_id_of(public_bytes: bytes) -> str:
    """The id of a context: the first 16 hex digits of the SHA-256 of its public file."""
    return hashlib.sha256(public_bytes).hexdigest()[:16]


@lru_cache(maxsize=1)
def _parameter_bytes() -> bytes:
    """The federation's parameters as SEAL saves them: what every key file holds and is checked against."""
    return _Files().save(_encryption_parameters())


def _container(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.frombuffer(data, np.uint8) for name, data in members.items()})
    return buffer.getvalue()


def _seal_context() -> seal.SEALContext:
    return seal.SEALContext(_encryption_parameters(), True, seal.SEC_LEVEL_TYPE.TC128)


def create_keys(out_dir: Path) -> str:
    """Create a fresh key set; write the secret, public and manifest files; return the context id."""
    context, parameters = _seal_context(), _parameter_bytes()
    key_set = secrets.token_bytes(16)
    secret_key = _Files().save(seal.KeyGenerator(context).secret_key())
    public = _container({_PARAMETERS: parameters, _KEY_SET: key_set})
    secret = _container({_PARAMETERS: parameters, _KEY_SET: key_set, _SECRET_KEY: secret_key})
    identifier = context_id_of(public)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_secret(out_dir / SECRET_FILE, secret)
    (out_dir / PUBLIC_FILE).write_bytes(public)
    manifest = {"context_id": identifier, "secret_sha256": hashlib.sha256(secret).hexdigest(), "ckks": asdict(CKKS)}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return identifier


def _read_context(path: Path) -> tuple[seal.SEALContext, dict[str, bytes]]:
    """The SEAL context a key file describes, and the file's members; refused unless its parameters
    are the federation's (``CKKS``)."""
    if not path.exists():
        raise ContextError(f"{path}: no such context file")
    try:
        with np.load(path, allow_pickle=False) as saved:
            members = {name: saved[name].tobytes() for name in saved.files}
    except Exception as exc:  # numpy raises several kinds on a file that is not an npz archive
        raise ContextError(f"{path}: not a fedshop context file ({exc}); the key steward writes them with "
                           "`fedshop keys init`") from exc
    if _PARAMETERS not in members or _KEY_SET not in members:
        raise ContextError(f"{path}: not a fedshop context file (no parameters or key-set id); the key steward "
                           "writes them with `fedshop keys init`")
    if members[_PARAMETERS] != _parameter_bytes():
        raise ContextError(f"{path} was made with other CKKS parameters than this fedshop's ({asdict(CKKS)}); "
                           "the key steward must run `fedshop keys init` again")
    return _seal_context(), members


def load_public_context(path: Path) -> KeyContext:
    """The server's context; refused if it holds a secret key (the server must never decrypt)."""
    context, members = _read_context(path)
    if _SECRET_KEY in members:
        raise ContextError(f"{path} holds a secret key; the server must only be given the public "
                           f"context ({PUBLIC_FILE}) written by `fedshop keys init`")
    return KeyContext(context, context_id_of(path.read_bytes()))


def load_secret_context(path: Path) -> KeyContext:
    """A merchant's context; it must hold the secret key and match the ``context.json`` beside it."""
    context, members = _read_context(path)
    if _SECRET_KEY not in members:
        raise ContextError(f"{path} holds no secret key; merchants need {SECRET_FILE} from the key steward")
    manifest_path = path.parent / MANIFEST_FILE
    if not manifest_path.exists():
        raise ContextError(f"{manifest_path} not found: keep the key steward's {MANIFEST_FILE} beside {path.name}")
    manifest = json.loads(manifest_path.read_text())
    if hashlib.sha256(path.read_bytes()).hexdigest() != manifest.get("secret_sha256"):
        raise ContextError(f"{path} is not the secret context described by {manifest_path} "
                           f"(context {manifest.get('context_id')}); the files come from different key sets")
    secret_key = _Files().load(seal.SecretKey(), context, members[_SECRET_KEY])
    return KeyContext(context, str(manifest["context_id"]), secret_key)


def ciphertext_count(size: int) -> int:
    """How many ciphertexts a vector of ``size`` values takes."""
    return -(-size // CKKS.values_per_ciphertext)


@lru_cache(maxsize=1)
def encrypted_bytes() -> tuple[int, int]:
    """The serialised size of one merchant's ciphertext (seeded) and of a sum of several (measured
    once with a throwaway key set)."""
    with tempfile.TemporaryDirectory() as folder:
        create_keys(Path(folder))
        secret = load_secret_context(Path(folder) / SECRET_FILE)
        public = load_public_context(Path(folder) / PUBLIC_FILE)
    updates = [encrypt(secret, np.zeros(CKKS.values_per_ciphertext, np.int64)) for _ in range(2)]
    total = add_updates(public, [parse_update(public, update, CKKS.values_per_ciphertext) for update in updates])
    return int(updates[0][CIPHERTEXT_SIZES][0]), int(total[CIPHERTEXT_SIZES][0])


def pack(serialized: list[bytes]) -> dict[str, np.ndarray]:
    """Serialised ciphertexts as the two arrays an encrypted update travels in (a sum adds its ``SEEDS``)."""
    return {CIPHERTEXTS: np.frombuffer(b"".join(serialized), dtype=np.uint8),
            CIPHERTEXT_SIZES: np.array([len(data) for data in serialized], dtype=np.int64)}


def unpack(arrays: dict[str, np.ndarray], count: int) -> list[bytes]:
    """The ``count`` serialised ciphertexts of a packed encrypted update, checked before any is split off."""
    names = sorted(arrays)
    if names != sorted((CIPHERTEXTS, CIPHERTEXT_SIZES)):
        raise CiphertextError(f"an encrypted update is the arrays {CIPHERTEXTS!r} and {CIPHERTEXT_SIZES!r}, got "
                              f"{len(names)} arrays: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")
    data, sizes = arrays[CIPHERTEXTS], arrays[CIPHERTEXT_SIZES]
    if data.dtype != np.uint8 or data.ndim != 1:
        raise CiphertextError(f"{CIPHERTEXTS} is {data.dtype}{list(data.shape)}, expected bytes")
    if sizes.dtype != np.int64 or sizes.ndim != 1:
        raise CiphertextError(f"{CIPHERTEXT_SIZES} is {sizes.dtype}{list(sizes.shape)}, expected int64 sizes")
    if len(sizes) != count:
        raise CiphertextError(f"expected {count} ciphertexts, got {len(sizes)}")
    lengths = sizes.tolist()
    for index, size in enumerate(lengths):
        if not 0 < size <= MAX_CIPHERTEXT_BYTES:
            raise CiphertextError(f"ciphertext {index} has {size} bytes, outside (0, {MAX_CIPHERTEXT_BYTES}]")
    if sum(lengths) != data.size:
        raise CiphertextError(f"the {count} ciphertexts' sizes add up to {sum(lengths)} bytes, "
                              f"but {CIPHERTEXTS} holds {data.size}")
    ends = itertools.accumulate(lengths)
    return [data[end - size:end].tobytes() for size, end in zip(lengths, ends, strict=True)]


def unpack_sum(arrays: dict[str, np.ndarray], count: int) -> tuple[list[bytes], np.ndarray]:
    """The ``count`` serialised ciphertexts of a packed sum and, for each, the seeds of the updates it adds
    (``[count, updates, SEED_BYTES]``), checked before any is split off."""
    if sorted(arrays) != sorted((CIPHERTEXTS, CIPHERTEXT_SIZES, SEEDS)):
        raise CiphertextError(f"an encrypted sum is the arrays {CIPHERTEXTS!r}, {CIPHERTEXT_SIZES!r} and {SEEDS!r} "
                              f"(the seeds of the updates it adds), got {', '.join(sorted(arrays)[:4])}")
    seeds = arrays[SEEDS]
    if seeds.dtype != np.uint8 or seeds.ndim != 3 or seeds.shape[0] != count or seeds.shape[2] != SEED_BYTES \
            or not 0 < seeds.shape[1] <= CKKS.max_merchants:
        raise CiphertextError(f"{SEEDS} is {seeds.dtype}{list(seeds.shape)}, expected uint8 [{count}, updates (1 to "
                              f"{CKKS.max_merchants}), {SEED_BYTES}]")
    return unpack({name: arrays[name] for name in (CIPHERTEXTS, CIPHERTEXT_SIZES)}, count), seeds


class _Machinery:
    """SEAL's objects for one key set, and the conversions between packed integers and plaintexts."""

    def __init__(self, key: KeyContext) -> None:
        self.key, self.files = key, _Files()
        self.evaluator = seal.Evaluator(key.context)
        plain = seal.Plaintext()
        seal.CKKSEncoder(key.context).encode(0.0, key.context.first_parms_id(), 1.0, plain)
        self.plaintext = self.files.save(plain)  # the template a packed plaintext takes its metadata from
        shape = (2, len(key.moduli), CKKS.poly_modulus_degree)
        self.ciphertext = ciphertext_bytes(self.files.save(seal.Ciphertext(key.context)), np.zeros(shape), False)
        self.modulus = math.prod(key.moduli)
        self.crt = [(self.modulus // q) * pow(self.modulus // q, -1, q) for q in key.moduli]
        self.primes = np.array(key.moduli, np.uint64)[:, None]
        self.halves: OrderedDict[bytes, np.ndarray] = OrderedDict()  # the last sums' halves, by their seeds

    def random_half(self, seed: bytes) -> np.ndarray:
        """The random second polynomial (moduli, degree; NTT form) SEAL draws from a ciphertext's ``seed``."""
        zero = np.zeros((len(self.key.moduli), CKKS.poly_modulus_degree), np.uint64)
        seeded = seeded_ciphertext_bytes(self.ciphertext, zero, seed)
        item = self.files.load(seal.Ciphertext(), self.key.context, seeded)
        return ciphertext_polynomials(self.files.save(item))[1]

    def summed_half(self, seeds: np.ndarray) -> np.ndarray:
        """The sum of the halves drawn from ``seeds``; the last ``KEPT_HALVES`` seed sets' sums are kept: a node
        decrypts one aggregate to evaluate and again to train, and simulated merchants in one process share
        it (drawing a half takes about 1.2 ms: 2.1 s for the demo's model summed over 100 merchants)."""
        key = seeds.tobytes()
        if key in self.halves:
            self.halves.move_to_end(key)
            return self.halves[key]
        half = np.zeros((len(self.key.moduli), CKKS.poly_modulus_degree), np.uint64)
        for seed in seeds:
            half = (half + self.random_half(seed.tobytes())) % self.primes  # each below 2**60: no overflow
        self.halves[key] = half
        if len(self.halves) > KEPT_HALVES:
            self.halves.popitem(last=False)
        return half

    def with_random_half(self, item: seal.Ciphertext, half: np.ndarray) -> seal.Ciphertext:
        """``item``'s first polynomial with ``half`` (``summed_half``) as its second."""
        first = ciphertext_polynomials(self.files.save(item))[0]
        return self.files.load(seal.Ciphertext(), self.key.context,
                               ciphertext_bytes(self.ciphertext, np.stack([first, half]), True))

    def _ntt(self, residues: np.ndarray, forward: bool) -> np.ndarray:
        """A polynomial's residues moved into (``forward``) or out of SEAL's NTT form, by SEAL."""
        polynomials = np.zeros((2, *residues.shape), np.uint64)
        polynomials[0] = residues
        polynomials[1, :, 0] = 1  # SEAL will not transform a ciphertext whose second polynomial is zero
        item = self.files.load(seal.Ciphertext(), self.key.context,
                               ciphertext_bytes(self.ciphertext, polynomials, not forward))
        moved = seal.Ciphertext()
        (self.evaluator.transform_to_ntt if forward else self.evaluator.transform_from_ntt)(item, moved)
        return ciphertext_polynomials(self.files.save(moved))[0]

    def plaintext_of(self, fields: np.ndarray) -> seal.Plaintext:
        """The plaintext whose every coefficient packs one column of the (fields, degree) integers."""
        limbs = np.zeros((fields.shape[1], _LIMBS), np.uint64)
        for index, field in enumerate(fields):
            _place(limbs, _field_start(index), (field + _FIELD_HALF).astype(np.uint64))
        shifted = _from_limbs(limbs)  # each field offset by half its width, so every slice is unsigned
        residues = np.stack([_sub_mod((shifted % q).astype(np.uint64), _FIELD_OFFSETS % q, q)
                             for q in self.key.moduli])
        return self.files.load(seal.Plaintext(), self.key.context,
                               plaintext_bytes(self.plaintext, self._ntt(residues, forward=True).ravel()))

    def fields_of(self, plain: seal.Plaintext) -> np.ndarray:
        """The (fields, degree) integers a decrypted plaintext packs: the noise, flooded with fresh noise of
        ``flood_bits``, rounded away and each field read as a signed integer."""
        shape = (len(self.key.moduli), CKKS.poly_modulus_degree)
        residues = self._ntt(plaintext_coefficients(self.files.save(plain)).reshape(shape), forward=False)
        composed = sum(residue.astype(object) * factor for residue, factor in zip(residues, self.crt, strict=True))
        flood = np.random.default_rng().integers(-_FLOOD, _FLOOD, CKKS.poly_modulus_degree, endpoint=True)
        limbs = _to_limbs((composed + flood.astype(object) + _FIELD_OFFSETS + _NOISE_HALF) % self.modulus)
        widths = [CKKS.field_bits] * (CKKS.fields - 1) + [_LIMBS * 64 - _field_start(CKKS.fields - 1)]
        return np.stack([_slice(limbs, _field_start(index), width).astype(np.int64) - _FIELD_HALF
                         for index, width in enumerate(widths)])


_LIMBS = 3  # 64-bit words that hold a packed coefficient (the data modulus has 180 bits)
_FIELD_HALF = 1 << (CKKS.field_bits - 1)
_NOISE_HALF = 1 << (CKKS.noise_bits - 1)
_FLOOD = 1 << CKKS.flood_bits


def _field_start(index: int) -> int:
    return CKKS.noise_bits + index * CKKS.field_bits


_FIELD_OFFSETS = sum(_FIELD_HALF << _field_start(index) for index in range(CKKS.fields))


def _place(limbs: np.ndarray, start: int, values: np.ndarray) -> None:
    word, shift = divmod(start, 64)
    limbs[:, word] |= values << np.uint64(shift)
    if shift + CKKS.field_bits > 64:
        limbs[:, word + 1] |= values >> np.uint64(64 - shift)


def _slice(limbs: np.ndarray, start: int, width: int) -> np.ndarray:
    word, shift = divmod(start, 64)
    bits = limbs[:, word] >> np.uint64(shift)
    if shift and shift + width > 64:
        bits |= limbs[:, word + 1] << np.uint64(64 - shift)
    return bits & np.uint64((1 << width) - 1) if width < 64 else bits


def _to_limbs(values: np.ndarray) -> np.ndarray:
    """Non-negative Python integers below 2**192 as rows of little-endian 64-bit words."""
    data = b"".join(int(value).to_bytes(8 * _LIMBS, "little") for value in values)
    return np.frombuffer(data, dtype="<u8").reshape(-1, _LIMBS).astype(np.uint64)


def _from_limbs(limbs: np.ndarray) -> np.ndarray:
    data, width = np.ascontiguousarray(limbs, dtype="<u8").tobytes(), 8 * _LIMBS
    return np.array([int.from_bytes(data[start:start + width], "little") for start in range(0, len(data), width)],
                    dtype=object)


def _sub_mod(values: np.ndarray, subtrahend: int, modulus: int) -> np.ndarray:
    """``(values - subtrahend) mod modulus`` for residues and a constant below the modulus."""
    below = values < np.uint64(subtrahend)
    return np.where(below, values + np.uint64(modulus - subtrahend), values - np.uint64(subtrahend))


def _chunks(values: np.ndarray) -> list[np.ndarray]:
    """A flat integer vector as (fields, degree) blocks, one per ciphertext, the last padded with zeros."""
    padded = np.zeros(ciphertext_count(len(values)) * CKKS.values_per_ciphertext, np.int64)
    padded[:len(values)] = values
    return list(padded.reshape(-1, CKKS.fields, CKKS.poly_modulus_degree))


def encrypt(key: KeyContext, values: np.ndarray) -> dict[str, np.ndarray]:
    """Encrypt a flat vector of fixed-point integers (``fedshop.privacy.fixed_point``), seeded and packed."""
    if not key.has_secret_key:
        raise ContextError("encrypting an update needs the merchant's secret context")
    limit = 1 << (CKKS.field_bits - 1)
    if values.size and int(np.abs(values).max()) >= limit:
        raise ValueError(f"a packed value must be below 2**{CKKS.field_bits - 1} in magnitude")
    machinery = key._machinery
    encryptor = seal.Encryptor(key.context, key.secret_key)
    return pack([machinery.files.save(encryptor.encrypt_symmetric(machinery.plaintext_of(fields)))
                 for fields in _chunks(values.astype(np.int64))])


def _parse(key: KeyContext, index: int, data: bytes) -> seal.Ciphertext:
    try:
        item = key._machinery.files.load(seal.Ciphertext(), key.context, data)
    except Exception as exc:  # SEAL raises bare RuntimeError/ValueError on a stream it cannot load
        raise CiphertextError(f"ciphertext {index} cannot be read under context {key.context_id} "
                              f"(truncated, corrupted or made with other parameters): {exc}") from exc
    if item.size() != 2 or not item.is_ntt_form() or item.parms_id() != key.context.first_parms_id() \
            or item.scale != 1.0:
        raise CiphertextError(f"ciphertext {index} is not a fresh fedshop encryption (size {item.size()}, "
                              f"scale {item.scale:g}, at another level or out of NTT form)")
    return item


class Update(NamedTuple):
    """A merchant's parsed update: its ciphertexts, and the seed each one's random half was drawn from."""

    ciphertexts: list[seal.Ciphertext]
    seeds: list[bytes]


def _seed(index: int, data: bytes) -> bytes:
    try:
        seed = ciphertext_seed(data)
    except SealFormatError as exc:
        raise CiphertextError(f"ciphertext {index} is not seeded: an update sends its random half as the seed "
                              f"it was drawn from, which a sum carries to the merchants ({exc})") from exc
    if len(seed) != SEED_BYTES:
        raise CiphertextError(f"ciphertext {index}'s seed takes {len(seed)} bytes, not SEAL's {SEED_BYTES}")
    return seed


def parse_update(key: KeyContext, ciphertexts: dict[str, np.ndarray], size: int) -> Update:
    """Check an encrypted update (arrays, count, sizes, parameters, well-formed seeded ciphertexts) and parse it."""
    parts = unpack(ciphertexts, ciphertext_count(size))
    items = [_parse(key, index, data) for index, data in enumerate(parts)]
    seeds = [_seed(index, data) for index, data in enumerate(parts)]
    if len(set(seeds)) < len(seeds):
        raise CiphertextError("the update repeats a seed: each of its ciphertexts is drawn from a seed of its own, "
                              "and merchants refuse a sum that repeats one")
    return Update(items, seeds)


def add_updates(key: KeyContext, updates: list[Update]) -> dict[str, np.ndarray]:
    """Sum parsed updates ciphertext by ciphertext (the public context suffices), packed with their seeds."""
    if len(updates) > CKKS.max_merchants:
        raise CiphertextError(f"{len(updates)} updates: one sum adds at most {CKKS.max_merchants} "
                              "(more would let the encryption noise reach the packed values)")
    machinery, totals = key._machinery, []
    for first, *rest in zip(*(update.ciphertexts for update in updates), strict=True):
        total = first
        for part in rest:
            added = seal.Ciphertext()
            machinery.evaluator.add(total, part, added)
            total = added
        totals.append(machinery.files.save(total))
    seeds = np.array([[np.frombuffer(seed, np.uint8) for seed in drawn]
                      for drawn in zip(*(update.seeds for update in updates), strict=True)], np.uint8)
    return pack(totals) | {SEEDS: seeds}


def parse_sum(key: KeyContext, ciphertexts: dict[str, np.ndarray], size: int
              ) -> tuple[list[seal.Ciphertext], np.ndarray]:
    """Check an encrypted sum (arrays, count, sizes, parameters, well-formed ciphertexts, and seeds of which
    none repeats) and parse it: its ciphertexts and, for each, the seeds of the updates it adds."""
    parts, seeds = unpack_sum(ciphertexts, ciphertext_count(size))
    if len({seed.tobytes() for seed in seeds.reshape(-1, SEED_BYTES)}) < seeds.shape[0] * seeds.shape[1]:
        raise CiphertextError("the sum repeats a seed: it adds each of a merchant's ciphertexts once, and a "
                              "repeated one, here or at another of its places, would read out the encryption noise")
    return [_parse(key, index, data) for index, data in enumerate(parts)], seeds


def decrypt(key: KeyContext, ciphertexts: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Decrypt a sum of updates back to the flat vector of ``size`` summed fixed-point integers. The random
    halves are drawn again from the summed updates' seeds, never taken from the sum (see the module's
    docstring): a sum that repeats a seed anywhere is refused."""
    if not key.has_secret_key:
        raise ContextError("decryption needs the merchant's secret context")
    machinery = key._machinery
    decryptor = seal.Decryptor(key.context, key.secret_key)
    sent, seeds = parse_sum(key, ciphertexts, size)
    blocks = []
    for index, (item, drawn) in enumerate(zip(sent, seeds, strict=True)):
        try:
            half = machinery.summed_half(drawn)
        except (RuntimeError, ValueError) as exc:  # SEAL refuses a seed it cannot draw from
            raise CiphertextError(f"ciphertext {index} of the sum: its seeds cannot be drawn from ({exc})") from exc
        item = machinery.with_random_half(item, half)
        plain = seal.Plaintext()
        decryptor.decrypt(item, plain)
        blocks.append(machinery.fields_of(plain).ravel())
    return np.concatenate(blocks)[:size]
