"""Encryption at rest with a password that is never stored.

At create, the password is stretched with scrypt (memory-hard) into an X25519 private key;
only the salt and the matching public key are kept. When the file is stored, the worker,
which never sees the password, makes an ephemeral key pair, derives the file key from the
X25519 exchange with that public key (HKDF-SHA256) and encrypts the bytes in 1 MiB segments
with AES-256-GCM (nonce = segment number and a last-segment flag, so segments cannot be
reordered, dropped or the file truncated). Reading needs the password again: it gives the
private key back, which is checked against the stored public key in constant time (a wrong
password is refused before any byte is decrypted), then the file key.
"""
from __future__ import annotations

import base64
import hmac
import os
from typing import BinaryIO, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SCHEME = "x25519-scrypt-aes256gcm-v1"
SEGMENT = 1024 * 1024
TAG = 16
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # 32 MiB of memory per derivation


class WrongPassword(Exception):
    pass


class CorruptCiphertext(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _private_key(password: str, params: dict) -> X25519PrivateKey:
    kdf = Scrypt(salt=_unb64(params["salt"]), length=32, n=params["n"], r=params["r"], p=params["p"])
    return X25519PrivateKey.from_private_bytes(kdf.derive(password.encode("utf-8")))


def new_password_params(password: str) -> dict:
    """Public parameters to store for a password (salt, scrypt cost, public key)."""
    params = {"scheme": SCHEME, "salt": _b64(os.urandom(16)), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
    params["publicKey"] = _b64(_raw(_private_key(password, params).public_key()))
    return params


def _file_key(shared: bytes, ephemeral: bytes, public: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + public, info=b"drive file key").derive(shared)


def new_file_key(params: dict) -> tuple[bytes, dict]:
    """(file key, parameters to store with the file) for the password behind `params`."""
    public = _unb64(params["publicKey"])
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
    stored = dict(params, ephemeralKey=_b64(ephemeral_public), segment=SEGMENT)
    return _file_key(shared, ephemeral_public, public), stored


def open_file_key(password: str, stored: dict) -> bytes:
    """The file key, given the password; WrongPassword if it is not the one used at upload."""
    private = _private_key(password, stored)
    public = _raw(private.public_key())
    if not hmac.compare_digest(public, _unb64(stored["publicKey"])):
        raise WrongPassword()
    ephemeral_public = _unb64(stored["ephemeralKey"])
    shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    return _file_key(shared, ephemeral_public, public)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypted_size(plain_size: int, segment: int = SEGMENT) -> int:
    segments = max(1, -(-plain_size // segment))
    return plain_size + segments * TAG


class SegmentEncryptor:
    """Feed plaintext in any pieces; get ciphertext segments out. Call `finish` once."""

    def __init__(self, key: bytes, segment: int = SEGMENT):
        self.aead = AESGCM(key)
        self.segment = segment
        self.buffer = bytearray()
        self.index = 0

    def update(self, data) -> Iterator[bytes]:
        self.buffer += data
        # keep at least one byte back: the last segment must be sealed with the last flag
        while len(self.buffer) > self.segment:
            piece = bytes(self.buffer[: self.segment])
            del self.buffer[: self.segment]
            yield self.aead.encrypt(_nonce(self.index, False), piece, None)
            self.index += 1

    def finish(self) -> bytes:
        out = self.aead.encrypt(_nonce(self.index, True), bytes(self.buffer), None)
        self.buffer.clear()
        return out


def decrypt_range(key: bytes, stored: dict, source_opener, plain_size: int, start: int, end: int) -> Iterator[bytes]:
    """Plaintext bytes [start, end) of an encrypted object. `source_opener(offset)` opens the
    ciphertext at a byte offset, so only the segments that hold the range are read."""
    segment = stored.get("segment", SEGMENT)
    aead = AESGCM(key)
    last_index = max(0, -(-plain_size // segment) - 1)
    index = start // segment
    skip = start - index * segment
    remaining = end - start
    source: BinaryIO = source_opener(index * (segment + TAG))
    try:
        while remaining > 0:
            sealed = source.read(segment + TAG)
            if not sealed:
                raise CorruptCiphertext("ciphertext ends early")
            try:
                plain = aead.decrypt(_nonce(index, index == last_index), sealed, None)
            except InvalidTag as error:
                raise CorruptCiphertext(f"segment {index} does not authenticate") from error
            piece = plain[skip: skip + remaining]
            skip = 0
            remaining -= len(piece)
            index += 1
            yield piece
    finally:
        source.close()
