"""Publishing events: ids per account, the stream kept for replay, the live channel."""
import uuid

from app.events import EVENT_HISTORY, keys_for, publish_event, read_events
from tests.support import EventListener


def test_ids_increase_per_account_and_packets_keep_their_shape(app_context, redis):
    a, b = uuid.uuid4(), uuid.uuid4()
    listener = EventListener(redis, a)
    first = publish_event(a, "upload.progress", {"taskId": "t1", "progress": 5.0})
    other = publish_event(b, "upload.progress", {"taskId": "t2"})
    second = publish_event(a, "upload.completed", {"taskId": "t1", "fileId": "f"})
    assert (first, second, other) == (1, 2, 1)
    assert listener.next(5) == {"id": 1, "type": "upload.progress", "data": {"taskId": "t1", "progress": 5.0}}
    assert listener.next(5) == {"id": 2, "type": "upload.completed", "data": {"taskId": "t1", "fileId": "f"}}
    assert listener.next(0.2) is None  # account b's event never reaches a's channel
    listener.close()
    assert [p["id"] for p in read_events(a)] == [1, 2]
    assert [p["id"] for p in read_events(a, since=1)] == [2]
    assert [p["data"]["taskId"] for p in read_events(b)] == ["t2"]


def test_history_is_bounded(app_context, redis):
    account = uuid.uuid4()
    pipe_total = EVENT_HISTORY + 300
    for n in range(pipe_total):
        publish_event(account, "task.progress", {"n": n})
    kept = redis.xlen(keys_for(account)[1])
    # MAXLEN ~ trims in whole macro-nodes: about EVENT_HISTORY entries, never all of them
    assert EVENT_HISTORY <= kept < pipe_total
    events = read_events(account, since=pipe_total - 5)
    assert [e["data"]["n"] for e in events] == list(range(pipe_total - 5, pipe_total))


def test_a_redis_failure_is_reported_not_raised(app):
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    broken = Redis(unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with app.app_context():
        assert publish_event(uuid.uuid4(), "upload.progress", {}, redis=broken) is None
