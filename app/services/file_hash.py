"""The whole file's SHA-256, advanced while its chunks arrive ("hash-ahead"), so that
finalizing hashes only what is left instead of reading the whole file a second time.

After recording a chunk, the web process that stored it takes a per-task lock in Redis and
hashes the stored chunks that follow the saved state, in index order, for as long as the
next one is stored (at most HASH_AHEAD_MAX_BYTES per request), then saves the state.
Chunks arrive in any order and in parallel: a chunk stored out of order waits until the
gap before it is filled, and then the request that filled it hashes both. Whoever finds
the lock taken leaves the work to its holder, who looks once more after releasing it, so
a chunk recorded meanwhile is not left behind.

The state is a cache in Redis, like the task metadata: losing it, or Redis being down,
only means finalize hashes more. It names the chunk objects it covers by a fingerprint of
their rows (index, size, SHA-256, storage key), so finalize uses it only for exactly those
stored chunks, and finalize still checks the whole digest against the declared one. Saving
is a compare-and-set on the index the state started from, so an expired lock cannot make
two holders overwrite each other's progress.
"""
from __future__ import annotations

import hashlib
import logging
import uuid

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import LockError, RedisError

from app import resumable_sha256
from app.extensions import db
from app.models import UploadChunk
from app.redis_client import get_redis
from app.services.chunk_body import thread_buffer
from app.storage import ObjectMissing

log = logging.getLogger(__name__)

HASH_AHEAD_MAX_BYTES = 64 * 1024 * 1024  # per request: a chunk that fills a long gap answers soon
LOCK_SECONDS = 60
MAX_TURNS = 8  # lock, hash, release, look again: bounded whatever races with it
_SAVE = """
local current = redis.call('HGET', KEYS[1], 'next')
if redis.call('HGET', KEYS[1], 'format') ~= ARGV[5] then current = false end
if (current == false and ARGV[1] == '0') or current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'next', ARGV[2], 'state', ARGV[3], 'fingerprint', ARGV[4], 'format', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return 1
end
return 0
"""


def _key(task_pk: uuid.UUID) -> str:
    return f"drive:file-hash:{task_pk}"


def _lock_key(task_pk: uuid.UUID) -> str:
    return f"drive:file-hash-lock:{task_pk}"


def _chain(fingerprint: str, index: int, size: int, sha256: str, storage_key: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{index}:{size}:{sha256}:{storage_key}".encode()).hexdigest()


def new_hasher(state: bytes | None = None):
    """A resumable SHA-256 where the platform has one, else hashlib's (only from the start)."""
    if resumable_sha256.available():
        return resumable_sha256.ResumableSha256(state)
    return hashlib.sha256()


def enabled() -> bool:
    return bool(current_app.config.get("UPLOAD_HASH_AHEAD", True)) and resumable_sha256.available()


def _load(redis, task_pk: uuid.UUID) -> tuple[int, bytes | None, str]:
    """(next index, saved state, fingerprint); (0, None, "") when there is none usable."""
    saved = redis.hgetall(_key(task_pk))
    try:
        if saved.get(b"format", b"").decode() == resumable_sha256.state_format():
            state = saved[b"state"]
            if len(state) == resumable_sha256.CTX_SIZE:
                return int(saved[b"next"]), state, saved[b"fingerprint"].decode()
    except (KeyError, ValueError, UnicodeDecodeError):
        pass
    return 0, None, ""


def _save(redis, task_pk, start: int, next_index: int, hasher, fingerprint: str) -> None:
    ttl = (current_app.config["UPLOAD_STALE_THRESHOLD_HOURS"] + 1) * 3600
    redis.eval(_SAVE, 1, _key(task_pk), start, next_index, hasher.state(), fingerprint,
               resumable_sha256.state_format(), ttl)


def _hash_object(backend, key: str, size: int, hasher) -> bool:
    """Feed a stored chunk to `hasher`; False (hasher then unusable) if it is not `size` bytes."""
    view = thread_buffer()
    total = 0
    with backend.open_read(key) as source:
        while True:
            count = source.readinto(view)
            if not count:
                break
            total += count
            if total > size:
                return False
            hasher.update(view[:count])
    return total == size


def advance(task_pk: uuid.UUID, backend) -> None:
    """Hash what follows the saved state while the next chunk is stored. Never raises: a
    failure here only leaves more for finalize."""
    if not enabled():
        return
    try:
        redis = get_redis()
        for _ in range(MAX_TURNS):
            if not _advance_locked(redis, task_pk, backend):
                return
    except Exception:  # noqa: BLE001 - an optimisation must not fail the chunk that was stored
        db.session.rollback()
        log.warning("hash-ahead of upload %s stopped", task_pk, exc_info=True)


def _advance_locked(redis, task_pk: uuid.UUID, backend) -> bool:
    """One turn under the lock; True when another turn may find more to hash."""
    lock = redis.lock(_lock_key(task_pk), timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return False  # the holder hashes on, and looks again after releasing
    try:
        next_index, out_of_budget = _advance(redis, task_pk, backend)
    finally:
        try:
            lock.release()
        except LockError:
            pass
    if out_of_budget:
        return False
    found = db.session.scalar(sa.select(UploadChunk.id).where(
        UploadChunk.task_id == task_pk, UploadChunk.chunk_index == next_index))
    db.session.rollback()
    return found is not None


def _advance(redis, task_pk: uuid.UUID, backend) -> tuple[int, bool]:
    start, state, fingerprint = _load(redis, task_pk)
    rows = db.session.execute(
        sa.select(UploadChunk.chunk_index, UploadChunk.size, UploadChunk.sha256, UploadChunk.storage_key)
        .where(UploadChunk.task_id == task_pk, UploadChunk.chunk_index >= start)
        .order_by(UploadChunk.chunk_index).limit(HASH_AHEAD_MAX_BYTES // (1024 * 1024) + 1)).all()
    db.session.rollback()  # no transaction (or SQLite lock) held while hashing
    hasher = resumable_sha256.ResumableSha256(state)
    next_index, budget = start, HASH_AHEAD_MAX_BYTES
    for row in rows:
        if row.chunk_index != next_index or budget <= 0:
            break
        try:
            if not _hash_object(backend, row.storage_key, row.size, hasher):
                return start, True  # not what was recorded: leave it all to finalize
        except (ObjectMissing, FileNotFoundError):
            return start, True  # the task ended meanwhile
        fingerprint = _chain(fingerprint, row.chunk_index, row.size, row.sha256, row.storage_key)
        next_index += 1
        budget -= row.size
    if next_index > start:
        _save(redis, task_pk, start, next_index, hasher, fingerprint)
    return next_index, budget <= 0


def resume(task_pk: uuid.UUID, chunks) -> tuple[int, object]:
    """For finalize, given every chunk row in index order: (how many leading chunks the
    returned hasher has already taken in, the hasher). (0, a fresh hasher) when no saved
    state matches these very chunks."""
    if resumable_sha256.available():
        try:
            next_index, state, fingerprint = _load(get_redis(), task_pk)
        except RedisError:
            next_index = 0
        if 0 < next_index <= len(chunks):
            expected = ""
            for chunk in chunks[:next_index]:
                expected = _chain(expected, chunk.chunk_index, chunk.size, chunk.sha256, chunk.storage_key)
            if expected == fingerprint:
                return next_index, new_hasher(state)
    return 0, new_hasher()


def forget(task_pk: uuid.UUID) -> None:
    try:
        get_redis().delete(_key(task_pk))
    except RedisError:
        pass
