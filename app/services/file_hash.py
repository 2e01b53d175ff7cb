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
from redis.exceptions import RedisError

from app import resumable_sha256
from app.extensions import db
from app.models import UploadChunk
from app.redis_client import get_redis
from app.services.chunk_body import borrowed_buffer
from app.storage import ObjectMissing

log = logging.getLogger(__name__)

HASH_AHEAD_MAX_BYTES = 64 * 1024 * 1024  # per request: a chunk that fills a long gap answers soon
LOCK_MS = 60_000
MAX_TURNS = 8  # claim, hash, save, look again: bounded whatever races with it
# One round trip each way: take the lock and read the state; save (compare-and-set on the
# index the turn started from) and give the lock back.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('HGETALL', KEYS[2])
end
return false
"""
_SAVE_AND_RELEASE = """
local saved = 0
if ARGV[2] ~= ARGV[3] then
  local current = redis.call('HGET', KEYS[2], 'next')
  if redis.call('HGET', KEYS[2], 'format') ~= ARGV[6] then current = false end
  if (current == false and ARGV[2] == '0') or current == ARGV[2] then
    redis.call('HSET', KEYS[2], 'next', ARGV[3], 'state', ARGV[4], 'fingerprint', ARGV[5], 'format', ARGV[6])
    redis.call('EXPIRE', KEYS[2], ARGV[7])
    saved = 1
  end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return saved
"""


def _key(task_pk: uuid.UUID) -> str:
    return f"drive:file-hash:{{{task_pk}}}"  # {…}: the state and its lock share a cluster slot


def _lock_key(task_pk: uuid.UUID) -> str:
    return f"drive:file-hash-lock:{{{task_pk}}}"


def _chain(fingerprint: str, index: int, size: int, sha256: str, storage_key: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{index}:{size}:{sha256}:{storage_key}".encode()).hexdigest()


def new_hasher(state: bytes | None = None):
    """A resumable SHA-256 where the platform has one, else hashlib's (only from the start)."""
    if resumable_sha256.available():
        return resumable_sha256.ResumableSha256(state)
    return hashlib.sha256()


def enabled() -> bool:
    return bool(current_app.config.get("UPLOAD_HASH_AHEAD", True)) and resumable_sha256.available()


def _parse(saved: dict) -> tuple[int, bytes | None, str]:
    """(next index, saved state, fingerprint) of a stored state; (0, None, "") when unusable."""
    try:
        if saved.get(b"format", b"").decode() == resumable_sha256.state_format():
            state = saved[b"state"]
            if len(state) == resumable_sha256.CTX_SIZE:
                return int(saved[b"next"]), state, saved[b"fingerprint"].decode()
    except (KeyError, ValueError, UnicodeDecodeError):
        pass
    return 0, None, ""


def _hash_object(backend, key: str, size: int, hasher) -> bool:
    """Feed a stored chunk to `hasher`; False (hasher then unusable) if it is not `size` bytes."""
    total = 0
    with borrowed_buffer() as view, backend.open_read(key) as source:
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
    token = uuid.uuid4().hex
    keys = (_lock_key(task_pk), _key(task_pk))
    claimed = redis.eval(_CLAIM, 2, *keys, token, LOCK_MS)
    if claimed is None:
        return False  # the holder hashes on, and looks again after releasing
    start, state, fingerprint = _parse(dict(zip(claimed[::2], claimed[1::2])))
    next_index, hasher = start, None
    try:
        next_index, hasher, fingerprint, out_of_budget = _advance(task_pk, backend, start, state, fingerprint)
    finally:
        ttl = (current_app.config["UPLOAD_STALE_THRESHOLD_HOURS"] + 1) * 3600
        redis.eval(_SAVE_AND_RELEASE, 2, *keys, token, start, next_index,
                   hasher.state() if hasher is not None else b"", fingerprint,
                   resumable_sha256.state_format(), ttl)
    if out_of_budget:
        return False
    found = db.session.scalar(sa.select(UploadChunk.id).where(
        UploadChunk.task_id == task_pk, UploadChunk.chunk_index == next_index))
    db.session.rollback()
    return found is not None


def _advance(task_pk: uuid.UUID, backend, start: int, state: bytes | None, fingerprint: str):
    """Hash the stored chunks from `start` on while they follow each other, within the
    budget: (next index, hasher, fingerprint, whether the budget ran out or a chunk could
    not be read)."""
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
                return start, None, fingerprint, True  # not what was recorded: leave it all to finalize
        except (ObjectMissing, FileNotFoundError):
            return start, None, fingerprint, True  # the task ended meanwhile
        fingerprint = _chain(fingerprint, row.chunk_index, row.size, row.sha256, row.storage_key)
        next_index += 1
        budget -= row.size
    return next_index, hasher, fingerprint, budget <= 0


def resume(task_pk: uuid.UUID, chunks) -> tuple[int, object]:
    """For finalize, given every chunk row in index order: (how many leading chunks the
    returned hasher has already taken in, the hasher). (0, a fresh hasher) when no saved
    state matches these very chunks."""
    if resumable_sha256.available():
        try:
            next_index, state, fingerprint = _parse(get_redis().hgetall(_key(task_pk)))
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
