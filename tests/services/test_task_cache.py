"""The task-metadata cache holds only what never changes, so it cannot serve a stale state."""
import json

from app.services import task_cache
from tests.support import MIB, random_bytes


def test_metadata_is_cached_with_a_ttl_and_scoped_to_the_owner(api, make_api, app, redis):
    data = random_bytes(MIB + 10)
    task_id = api.create(data, chunkSize=MIB).get_json()["taskId"]
    key = f"drive:task-meta:{task_id}"
    cached = json.loads(redis.get(key))
    assert cached["chunks_count"] == 2 and cached["account_id"] == str(api.account_id)
    ttl = redis.ttl(key)
    assert 0 < ttl <= app.config["UPLOAD_CACHE_DURATION_MINUTES"] * 60
    # another account never gets it, cached or not
    other = make_api()
    assert other.send_chunk(task_id, 0, data[:MIB]).status_code == 404


def test_a_cancelled_task_is_refused_at_once_even_if_its_metadata_were_cached(api, app, redis):
    data = random_bytes(MIB + 10)
    task_id = api.create(data, chunkSize=MIB).get_json()["taskId"]
    meta = redis.get(f"drive:task-meta:{task_id}")
    assert api.delete(f"/files/upload/task/{task_id}").status_code == 204
    assert redis.get(f"drive:task-meta:{task_id}") is None
    redis.set(f"drive:task-meta:{task_id}", meta)  # a stale copy written back by a slow reader
    sent = api.send_chunk(task_id, 0, data[:MIB])
    assert sent.status_code == 404 and sent.get_json()["code"] == "UPLOAD_NOT_FOUND"


def test_redis_loss_of_the_entry_falls_back_to_the_database(api, redis, app):
    data = random_bytes(MIB + 10)
    task_id = api.create(data, chunkSize=MIB).get_json()["taskId"]
    redis.delete(f"drive:task-meta:{task_id}")
    assert api.send_chunk(task_id, 0, data[:MIB]).status_code == 200
    with app.app_context():
        assert task_cache.task_meta(task_id, api.account_id).chunks_count == 2
