"""app.crypto: encryption at rest with a password that is never stored."""
from __future__ import annotations

import base64
import io
import json
import random

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from app import crypto
from app.crypto import SEGMENT, TAG, CorruptCiphertext, WrongPassword
from tests.support import random_bytes

PASSWORD = "correct horse battery staple ✓"
SIZES = [1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5]


@pytest.fixture(scope="module")
def params():
    """scrypt is slow on purpose: derive once for the module."""
    return crypto.new_password_params(PASSWORD)


def encrypt(key: bytes, data: bytes, piece: int = 100_003) -> bytes:
    """Feed the plaintext in odd-sized pieces, as the finalize job does with chunk blocks."""
    encryptor = crypto.SegmentEncryptor(key)
    out = []
    for start in range(0, len(data), piece):
        out.extend(encryptor.update(data[start:start + piece]))
    out.append(encryptor.finish())
    return b"".join(out)


class Source:
    """An opener over ciphertext that records where each read started."""

    def __init__(self, ciphertext: bytes):
        self.ciphertext = ciphertext
        self.offsets: list[int] = []

    def __call__(self, offset: int):
        self.offsets.append(offset)
        return io.BytesIO(self.ciphertext[offset:])


def decrypt(key, stored, ciphertext, size, start=0, end=None) -> bytes:
    end = size if end is None else end
    return b"".join(crypto.decrypt_range(key, stored, Source(ciphertext), size, start, end))


@pytest.fixture(scope="module")
def sealed(params):
    """(data, file key, stored params, ciphertext) of a 3 * SEGMENT + 5 byte file."""
    data = random_bytes(3 * SEGMENT + 5, seed=7)
    key, stored = crypto.new_file_key(params)
    return data, key, stored, encrypt(key, data)


@pytest.mark.parametrize("size", SIZES, ids=["1", "SEGMENT-1", "SEGMENT", "SEGMENT+1", "3xSEGMENT+5"])
def test_round_trip(params, size):
    data = random_bytes(size, seed=size)
    key, stored = crypto.new_file_key(params)
    ciphertext = encrypt(key, data)
    assert len(ciphertext) == crypto.encrypted_size(size)
    if size >= 16:
        assert data[:16] not in ciphertext, "the plaintext shows through"
    # the reader has only the password and what was stored with the file
    assert crypto.open_file_key(PASSWORD, json.loads(json.dumps(stored))) == key
    assert decrypt(key, stored, ciphertext, size) == data


def test_each_file_gets_its_own_key(params):
    key_a, stored_a = crypto.new_file_key(params)
    key_b, stored_b = crypto.new_file_key(params)
    assert key_a != key_b and stored_a["ephemeralKey"] != stored_b["ephemeralKey"]
    assert crypto.open_file_key(PASSWORD, stored_a) == key_a
    assert crypto.open_file_key(PASSWORD, stored_b) == key_b


def test_same_password_new_salt():
    first, second = crypto.new_password_params("pw"), crypto.new_password_params("pw")
    assert first["salt"] != second["salt"] and first["publicKey"] != second["publicKey"]


RANGES = [
    (0, 1), (0, SEGMENT), (1, SEGMENT - 1), (SEGMENT - 1, SEGMENT + 1), (SEGMENT, 2 * SEGMENT),
    (SEGMENT + 17, 3 * SEGMENT), (5, 3 * SEGMENT + 5), (3 * SEGMENT, 3 * SEGMENT + 5),
    (3 * SEGMENT + 4, 3 * SEGMENT + 5), (2 * SEGMENT - 3, 3 * SEGMENT + 2), (123, 123),
]


@pytest.mark.parametrize("start,end", RANGES)
def test_decrypt_range(sealed, start, end):
    data, key, stored, ciphertext = sealed
    source = Source(ciphertext)
    got = b"".join(crypto.decrypt_range(key, stored, source, len(data), start, end))
    assert got == data[start:end]
    # only the segments that hold the range are read: reading starts at the first of them
    assert source.offsets == [(start // SEGMENT) * (SEGMENT + TAG)]


def test_decrypt_random_ranges(sealed):
    data, key, stored, ciphertext = sealed
    rng = random.Random(11)
    for _ in range(25):
        start = rng.randrange(len(data))
        end = rng.randrange(start, len(data) + 1)
        assert decrypt(key, stored, ciphertext, len(data), start, end) == data[start:end], (start, end)


def test_wrong_password_is_refused(sealed):
    _, _, stored, _ = sealed
    for wrong in ("", "correct horse battery staple", PASSWORD + " ", PASSWORD.upper()):
        with pytest.raises(WrongPassword):
            crypto.open_file_key(wrong, stored)


def segments(ciphertext: bytes) -> list[bytes]:
    step = SEGMENT + TAG
    return [ciphertext[i:i + step] for i in range(0, len(ciphertext), step)]


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1:]


def tampered_cases(ciphertext: bytes) -> dict[str, bytes]:
    parts = segments(ciphertext)
    assert len(parts) == 4
    return {
        "flipped byte in segment 0": flip(ciphertext, 10),
        "flipped byte in the last segment": flip(ciphertext, len(ciphertext) - 20),
        "flipped tag": flip(ciphertext, SEGMENT + 3),
        "truncated mid segment": ciphertext[:-3],
        "last segment dropped": b"".join(parts[:3]),
        "a middle segment dropped": parts[0] + parts[2] + parts[3],
        "segments 0 and 1 swapped": parts[1] + parts[0] + parts[2] + parts[3],
        "last two segments swapped": parts[0] + parts[1] + parts[3] + parts[2],
        "a segment repeated": parts[0] + parts[0] + parts[2] + parts[3],
        "empty": b"",
    }


@pytest.mark.parametrize("case", [
    "flipped byte in segment 0", "flipped byte in the last segment", "flipped tag", "truncated mid segment",
    "last segment dropped", "a middle segment dropped", "segments 0 and 1 swapped",
    "last two segments swapped", "a segment repeated", "empty",
])
def test_tampered_ciphertext_is_refused(sealed, case):
    data, key, stored, ciphertext = sealed
    bad = tampered_cases(ciphertext)[case]
    with pytest.raises(CorruptCiphertext):
        decrypt(key, stored, bad, len(data))


def test_file_cut_at_a_segment_boundary_cannot_pass_as_whole(params):
    """Dropping the last segments and claiming the shorter size still fails: the segment that
    is now last was not sealed as the last one."""
    data = random_bytes(3 * SEGMENT + 5, seed=8)
    key, stored = crypto.new_file_key(params)
    cut = b"".join(segments(encrypt(key, data))[:2])
    with pytest.raises(CorruptCiphertext):
        decrypt(key, stored, cut, 2 * SEGMENT)


def test_the_stored_params_hold_no_secret(params, sealed):
    _, key, stored, _ = sealed
    private = crypto._private_key(PASSWORD, params).private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    secrets = [PASSWORD.encode(), private, key]
    assert set(params) == {"scheme", "salt", "n", "r", "p", "publicKey"}
    assert set(stored) == set(params) | {"ephemeralKey", "segment"}
    for document in (params, stored):
        text = json.dumps(document).encode()
        for secret in secrets:
            for form in (secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
                assert form not in text
        # every stored binary value is public: a salt or a 32-byte public key
        for name in ("salt", "publicKey", "ephemeralKey"):
            if name in document:
                assert base64.b64decode(document[name]) not in secrets
