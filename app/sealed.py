"""Sealing a secret that a worker needs later, so it is never stored in plain text.

`seal(data)` encrypts with AES-256-GCM under a key derived (HKDF-SHA256) from the server's
SECRET_KEY (JWT_SECRET when SECRET_KEY is unset); the token is `v1.<base64url(nonce|ct)>`.
`context` (e.g. the account id) is bound as associated data, so a token copied to another
account's task does not open. Web and workers must share the key: a token sealed by one
process opens only where the same SECRET_KEY (or JWT_SECRET) is set. Changing the key makes
open tokens unreadable (the task then fails with a clear message); nothing else depends on it.
"""
from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

PREFIX = "v1."


class SealBroken(Exception):
    """The token was not sealed with this server's key (or for this context), or is damaged."""


def _key() -> bytes:
    secret = current_app.config.get("SECRET_KEY") or current_app.config["JWT_SECRET"]
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"drive sealed v1",
                info=b"drive: secrets held for workers").derive(secret.encode("utf-8"))


def seal(data: bytes, context: bytes = b"") -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key()).encrypt(nonce, bytes(data), context)
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(token: str, context: bytes = b"") -> bytes:
    if not isinstance(token, str) or not token.startswith(PREFIX):
        raise SealBroken("not a sealed token")
    try:
        raw = base64.urlsafe_b64decode(token[len(PREFIX):])
        return AESGCM(_key()).decrypt(raw[:12], raw[12:], context)
    except (InvalidTag, ValueError) as error:
        raise SealBroken("the token does not open with this server's key") from error
