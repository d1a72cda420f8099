"""Encrypted aggregation with CKKS (TenSEAL): the one definition of the parameters and key files.

The key steward (a merchant or an auditor, never the operator) runs ``fedshop keys init`` once:

* ``secret.ctx`` — the full context with the secret key, handed to merchants out of band;
* ``public.ctx`` — the same parameters without any key material that decrypts, for the server;
* ``context.json`` — the context id (a digest of ``public.ctx``), a digest of ``secret.ctx`` and
  the parameters; it travels with ``secret.ctx`` so a merchant's node can check it holds the
  federation's key (a reloaded secret context serialises to different public bytes each time, so
  the id cannot be recomputed from it).

Merchants encrypt their weighted model with symmetric CKKS; the server deserialises the
ciphertexts under the public context, checks them and adds them, and can never decrypt. Only an
addition is computed, so two 60-bit primes suffice (measured: exact to ~2e-9 at 8x float32 bytes).

An encrypted model travels and is stored as two arrays (``pack``): the ciphertexts' bytes back to
back, and each one's size. Flower moves every array of a message as objects of its own, one
request each; a model of some 200 ciphertexts as 200 arrays took most of a real round's time in
transit.
"""

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import tenseal as ts


@dataclass(frozen=True)
class CkksParameters:
    """CKKS parameters for an addition-only workload."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60)
    scale_bits: int = 40
    security_level_bits: int = 128  # SEAL's default table for N=8192 allows up to 218 modulus bits

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


CKKS = CkksParameters()
SECRET_FILE, PUBLIC_FILE, MANIFEST_FILE = "secret.ctx", "public.ctx", "context.json"
CIPHERTEXTS, CIPHERTEXT_SIZES = "ciphertexts", "ciphertext-sizes"
MAX_CIPHERTEXT_BYTES = 2 * CKKS.poly_modulus_degree * len(CKKS.coeff_mod_bit_sizes) * 8 + 4096


class ContextError(ValueError):
    """A context file is missing, of the wrong kind, or not the federation's."""


class CiphertextError(ValueError):
    """An encrypted update cannot be used."""


@dataclass(frozen=True)
class KeyContext:
    """A loaded CKKS context and its id."""

    context: ts.Context
    context_id: str

    @property
    def has_secret_key(self) -> bool:
        return self.context.is_private()


def context_id_of(public_bytes: bytes) -> str:
    """The id of a context: the first 16 hex digits of the SHA-256 of its public serialisation."""
    return hashlib.sha256(public_bytes).hexdigest()[:16]


def _new_context() -> ts.Context:
    """A fresh symmetric CKKS context with the federation's parameters and a new secret key."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=CKKS.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(CKKS.coeff_mod_bit_sizes),
                         encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
    context.global_scale = 2.0**CKKS.scale_bits
    return context


def create_keys(out_dir: Path) -> str:
    """Create a fresh context; write the secret, public and manifest files; return the context id."""
    context = _new_context()
    public, secret = context.serialize(save_secret_key=False), context.serialize(save_secret_key=True)
    identifier = context_id_of(public)
    out_dir.mkdir(parents=True, exist_ok=True)
    secret_path = out_dir / SECRET_FILE
    secret_path.write_bytes(secret)
    secret_path.chmod(0o600)
    (out_dir / PUBLIC_FILE).write_bytes(public)
    manifest = {"context_id": identifier, "secret_sha256": hashlib.sha256(secret).hexdigest(), "ckks": asdict(CKKS)}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return identifier


def _read_context(path: Path) -> ts.Context:
    if not path.exists():
        raise ContextError(f"{path}: no such context file")
    try:
        return ts.context_from(path.read_bytes())
    except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError on bad streams
        raise ContextError(f"{path}: not a TenSEAL context ({exc})") from exc


def load_public_context(path: Path) -> KeyContext:
    """The server's context; refused if it holds a secret key (the server must never decrypt)."""
    context = _read_context(path)
    if context.is_private():
        raise ContextError(f"{path} holds a secret key; the server must only be given the public "
                           f"context ({PUBLIC_FILE}) written by `fedshop keys init`")
    return KeyContext(context, context_id_of(path.read_bytes()))


def load_secret_context(path: Path) -> KeyContext:
    """A merchant's context; it must hold the secret key and match the ``context.json`` beside it."""
    context = _read_context(path)
    if not context.is_private():
        raise ContextError(f"{path} holds no secret key; merchants need {SECRET_FILE} from the key steward")
    manifest_path = path.parent / MANIFEST_FILE
    if not manifest_path.exists():
        raise ContextError(f"{manifest_path} not found: keep the key steward's {MANIFEST_FILE} beside {path.name}")
    manifest = json.loads(manifest_path.read_text())
    if hashlib.sha256(path.read_bytes()).hexdigest() != manifest.get("secret_sha256"):
        raise ContextError(f"{path} is not the secret context described by {manifest_path} "
                           f"(context {manifest.get('context_id')}); the files come from different key sets")
    return KeyContext(context, str(manifest["context_id"]))


def ciphertext_count(size: int) -> int:
    """How many ciphertexts a vector of ``size`` values takes."""
    return -(-size // CKKS.slots)


@lru_cache(maxsize=1)
def ciphertext_bytes() -> int:
    """The size of one serialised ciphertext under ``CKKS`` (measured once with a throwaway context)."""
    return len(ts.ckks_vector(_new_context(), np.linspace(-1.0, 1.0, CKKS.slots).tolist()).serialize())


def pack(serialized: list[bytes]) -> dict[str, np.ndarray]:
    """Serialised ciphertexts as the two arrays an encrypted model travels in."""
    return {CIPHERTEXTS: np.frombuffer(b"".join(serialized), dtype=np.uint8),
            CIPHERTEXT_SIZES: np.array([len(data) for data in serialized], dtype=np.int64)}


def unpack(arrays: dict[str, np.ndarray], count: int) -> list[bytes]:
    """The ``count`` serialised ciphertexts of a packed encrypted model, checked before any is split off."""
    names = sorted(arrays)
    if names != sorted((CIPHERTEXTS, CIPHERTEXT_SIZES)):
        raise CiphertextError(f"an encrypted model is the arrays {CIPHERTEXTS!r} and {CIPHERTEXT_SIZES!r}, got "
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


def encrypt(key: KeyContext, values: np.ndarray) -> dict[str, np.ndarray]:
    """Encrypt a flat vector in slot-sized chunks, packed."""
    if not key.has_secret_key:
        raise ContextError("encrypting an update needs the merchant's secret context")
    chunks = np.array_split(values.astype(np.float64), ciphertext_count(len(values)))
    return pack([ts.ckks_vector(key.context, chunk.tolist()).serialize() for chunk in chunks])


def _parse(key: KeyContext, index: int, data: bytes) -> ts.CKKSVector:
    try:
        return ts.ckks_vector_from(key.context, data)
    except Exception as exc:
        raise CiphertextError(f"ciphertext {index} cannot be read under context {key.context_id} "
                              f"(truncated, corrupted or made with other parameters): {exc}") from exc


def parse_update(key: KeyContext, ciphertexts: dict[str, np.ndarray], size: int) -> list[ts.CKKSVector]:
    """Check an encrypted update (arrays, count, sizes, parameters, lengths) and parse it."""
    count = ciphertext_count(size)
    lengths = [len(c) for c in np.array_split(np.empty(size), count)]
    vectors = []
    for index, (data, length) in enumerate(zip(unpack(ciphertexts, count), lengths, strict=True)):
        vector = _parse(key, index, data)
        if vector.size() != length:
            raise CiphertextError(f"ciphertext {index} holds {vector.size()} values, expected {length}")
        vectors.append(vector)
    return vectors


def add_updates(updates: list[list[ts.CKKSVector]]) -> dict[str, np.ndarray]:
    """Sum parsed updates ciphertext by ciphertext (no key needed), packed."""
    total = []
    for parts in zip(*updates, strict=True):
        acc = parts[0]
        for part in parts[1:]:
            acc = acc + part  # a new vector; TenSEAL's copy() would need the secret key
        total.append(acc)
    return pack([vector.serialize() for vector in total])


def decrypt(key: KeyContext, ciphertexts: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Decrypt an (aggregated) update back to a flat float64 vector of ``size`` values."""
    if not key.has_secret_key:
        raise ContextError("decryption needs the merchant's secret context")
    return np.concatenate([np.asarray(v.decrypt()) for v in parse_update(key, ciphertexts, size)])
