"""SEAL's serialised plaintexts and ciphertexts, read and written as numpy arrays.

TenSEAL's SEAL API (``tenseal.sealapi``) saves and loads SEAL objects only through files, and gives
no access to a polynomial's coefficients. The compact encoding (``fedshop.privacy.ckks``) needs them: it
writes its own integer polynomials and reads the decrypted ones, and a node draws a sum's random
halves from the seeds of the updates summed. So this module reads and writes SEAL's own serialisation
of the two objects and a seeded ciphertext's seed (SEAL 4: a 16-byte header, then the object's members,
its coefficients last, as a nested dynamic array), uncompressed on write; SEAL's zlib and zstd
bodies are read with the codecs of the standard library and pyarrow. SEAL validates every object it
loads from these bytes against the context, as it does any other.
"""

import struct
import zlib
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pyarrow as pa

_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, version major, minor, compression, reserved, total size
_MAGIC = 0xA15E
_COMPRESSION = {0: "none", 1: "zlib", 2: "zstd"}
_PLAINTEXT = struct.Struct("<4QQd")  # parms id, coefficient count, scale
_CIPHERTEXT = struct.Struct("<4Q?QQQdQ")  # parms id, NTT form, size, degree, moduli, scale, correction factor
_COUNT = struct.Struct("<Q")
MAX_BODY_BYTES = 1 << 20  # the largest object read here, a sum's ciphertext, holds 384 KiB


Parsed = TypeVar("Parsed", np.ndarray, bytes)


class SealFormatError(ValueError):
    """Bytes that are not the SEAL object they should be."""


def _body(saved: bytes) -> tuple[bytes, tuple[int, int]]:
    """The uncompressed members of a saved SEAL object, and the SEAL version that wrote them."""
    if len(saved) < _HEADER.size:
        raise SealFormatError(f"{len(saved)} bytes are too few for a SEAL object")
    magic, header_size, major, minor, compression, _, total = _HEADER.unpack_from(saved)
    if magic != _MAGIC or header_size != _HEADER.size or total != len(saved):
        raise SealFormatError("not a SEAL object (bad header)")
    body = saved[_HEADER.size:]
    if compression == 1:
        inflate = zlib.decompressobj()
        body = inflate.decompress(body, MAX_BODY_BYTES + 1)
        if not inflate.eof:
            raise SealFormatError(f"a SEAL object's zlib body is cut short or holds more than {MAX_BODY_BYTES} bytes")
    elif compression == 2:
        body = pa.CompressedInputStream(pa.BufferReader(body), "zstd").read(MAX_BODY_BYTES + 1)
    elif compression != 0:
        raise SealFormatError(f"unknown SEAL compression mode {compression}")
    if len(body) > MAX_BODY_BYTES:  # a few kilobytes of zeros can inflate to gigabytes
        raise SealFormatError(f"a SEAL object's body holds more than {MAX_BODY_BYTES} bytes")
    return body, (major, minor)


def _saved(body: bytes, version: tuple[int, int]) -> bytes:
    return _HEADER.pack(_MAGIC, _HEADER.size, *version, 0, 0, _HEADER.size + len(body)) + body


def _coefficients(body: bytes, offset: int, count: int) -> np.ndarray:
    array, _ = _body(body[offset:])
    (stored,) = _COUNT.unpack_from(array)
    if stored != count or len(array) != _COUNT.size + 8 * count:
        raise SealFormatError(f"expected {count} coefficients, the object holds {stored}")
    return np.frombuffer(array, dtype="<u8", offset=_COUNT.size).copy()


def _array(data: np.ndarray, version: tuple[int, int]) -> bytes:
    flat = np.ascontiguousarray(data, dtype="<u8").ravel()
    return _saved(_COUNT.pack(flat.size) + flat.tobytes(), version)


def _parsed(parse: Callable[[bytes], Parsed], saved: bytes, kind: str) -> Parsed:
    try:
        return parse(saved)
    except SealFormatError:
        raise
    except (struct.error, zlib.error, OSError, ValueError) as exc:  # a body cut short or not the object's
        raise SealFormatError(f"not a saved SEAL {kind} ({exc})") from exc


def _plaintext_coefficients(saved: bytes) -> np.ndarray:
    body, _ = _body(saved)
    *_, count, _ = _PLAINTEXT.unpack_from(body)
    return _coefficients(body, _PLAINTEXT.size, count)


def plaintext_coefficients(saved: bytes) -> np.ndarray:
    """The coefficients of a saved plaintext (moduli x degree values for CKKS, in its NTT form)."""
    return _parsed(_plaintext_coefficients, saved, "plaintext")


def plaintext_bytes(like: bytes, coefficients: np.ndarray) -> bytes:
    """A saved plaintext with the parameters, scale and version of the saved plaintext ``like`` and
    the given coefficients."""
    body, version = _body(like)
    *parms_id, _, scale = _PLAINTEXT.unpack_from(body)
    return _saved(_PLAINTEXT.pack(*parms_id, coefficients.size, scale) + _array(coefficients, version), version)


def _ciphertext_polynomials(saved: bytes) -> np.ndarray:
    body, _ = _body(saved)
    *_, size, degree, moduli, _, _ = _CIPHERTEXT.unpack_from(body)
    return _coefficients(body, _CIPHERTEXT.size, size * degree * moduli).reshape(size, moduli, degree)


def ciphertext_polynomials(saved: bytes) -> np.ndarray:
    """The polynomials of a saved ciphertext, shaped (size, moduli, degree)."""
    return _parsed(_ciphertext_polynomials, saved, "ciphertext")


def _ciphertext_seed(saved: bytes) -> bytes:
    body, _ = _body(saved)
    *_, size, degree, moduli, _, _ = _CIPHERTEXT.unpack_from(body)
    start = _CIPHERTEXT.size
    if len(body) < start + _HEADER.size:
        raise SealFormatError("the ciphertext holds no polynomial")
    end = start + _HEADER.unpack_from(body, start)[-1]
    if size != 2:
        raise SealFormatError(f"a seeded ciphertext has two polynomials, this one {size}")
    _coefficients(body[:end], start, degree * moduli)  # the first polynomial only: the second is the seed's
    seed, _ = _body(body[end:])
    return seed


def ciphertext_seed(saved: bytes) -> bytes:
    """What a seeded ciphertext holds in place of its random second polynomial: the members of SEAL's
    saved generator info (its kind and the seed, without the header or compression they were saved
    with, so that one seed has one form), from which SEAL draws the polynomial again on load."""
    return _parsed(_ciphertext_seed, saved, "seeded ciphertext")


def seeded_ciphertext_bytes(like: bytes, first: np.ndarray, seed: bytes) -> bytes:
    """A saved seeded ciphertext in NTT form, with the parameters, scale and version of the saved
    ciphertext ``like``, the (moduli, degree) polynomial ``first`` and ``seed`` (``ciphertext_seed``)."""
    body, version = _body(like)
    *parms_id, _, _, _, _, scale, correction = _CIPHERTEXT.unpack_from(body)
    moduli, degree = first.shape
    members = _CIPHERTEXT.pack(*parms_id, True, 2, degree, moduli, scale, correction)
    return _saved(members + _array(first, version) + _saved(seed, version), version)


def ciphertext_bytes(like: bytes, polynomials: np.ndarray, ntt_form: bool) -> bytes:
    """A saved ciphertext with the parameters, scale and version of the saved ciphertext ``like``
    and the given (size, moduli, degree) polynomials."""
    body, version = _body(like)
    *parms_id, _, _, _, _, scale, correction = _CIPHERTEXT.unpack_from(body)
    size, moduli, degree = polynomials.shape
    members = _CIPHERTEXT.pack(*parms_id, ntt_form, size, degree, moduli, scale, correction)
    return _saved(members + _array(polynomials, version), version)
