"""app/resumable_sha256.py: a SHA-256 state saved at any byte and taken up again (in a new
object, as another process would) gives hashlib's digest."""
from __future__ import annotations

import hashlib
import os
import random

import pytest

from app import resumable_sha256
from app.resumable_sha256 import ResumableSha256


def test_available_here():
    # the platform the service runs on has it; without it hash-ahead is off (see file_hash)
    assert resumable_sha256.available()
    assert resumable_sha256.state_format().startswith("openssl-ctx112-")


@pytest.mark.parametrize("seed", range(5))
def test_saved_and_resumed_anywhere_gives_hashlibs_digest(seed):
    rng = random.Random(seed)
    data = os.urandom(rng.randrange(1, 300_000))
    cuts = sorted(rng.sample(range(len(data) + 1), min(6, len(data) + 1)))
    hasher, start = ResumableSha256(), 0
    for cut in cuts + [len(data)]:
        hasher.update(data[start:cut])
        hasher = ResumableSha256(hasher.state())
        start = cut
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_takes_bytes_bytearrays_and_views_of_them():
    data = os.urandom(100_000)
    buffer = bytearray(data)
    view = memoryview(buffer)
    hasher = ResumableSha256()
    hasher.update(data[:10])
    hasher.update(buffer[10:20])
    hasher.update(view[20:50_000])
    hasher.update(view[50_000:])
    hasher.update(b"")
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_hexdigest_does_not_end_the_hash():
    hasher = ResumableSha256()
    hasher.update(b"abc")
    assert hasher.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    hasher.update(b"def")
    assert hasher.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


def test_a_state_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError):
        ResumableSha256(b"\0" * 111)
