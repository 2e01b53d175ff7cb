"""A deployment's own task type (tests/custom_task_type.py, the README's example), loaded by
TASK_TYPE_MODULES in every process: created through the API, run by the real worker."""
from __future__ import annotations

from app import create_app
from app.tasks.registry import get_task_type
from config import Config
from tests.support import EventListener, assert_error


def test_task_type_modules_register_on_a_fresh_app(settings):
    fresh = create_app(Config.from_env(settings, TESTING=True))
    shout = get_task_type("Shout", fresh)
    assert shout is not None and shout.display_name == "Shout"
    bare = create_app(Config.from_env(dict(settings, TASK_TYPE_MODULES=""), TESTING=True))
    assert get_task_type("Shout", bare) is None and get_task_type("FileCompress", bare) is not None


def test_a_custom_task_runs_on_the_worker(api, redis, worker):
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json={"type": "Shout", "parameters": {"text": "hello, drive"}})
    assert created.status_code == 201, created.get_json()
    task_id = created.get_json()["taskId"]
    assert created.get_json()["name"] == "Shout" and created.get_json()["status"] == "Pending"
    seen = []
    while True:
        packet = listener.next(30)
        assert packet is not None, f"no end for {task_id}: {seen}"
        if packet["data"].get("taskId") == task_id:
            seen.append(packet["type"])
            if packet["type"] in ("task.completed", "task.failed"):
                break
    listener.close()
    assert seen[0] == "task.created" and "task.progress" in seen and seen[-1] == "task.completed"
    assert packet["data"]["results"] == {"text": "HELLO, DRIVE"}
    task = api.get(f"/tasks/{task_id}").get_json()
    assert task["status"] == "Completed" and task["results"] == {"text": "HELLO, DRIVE"}


def test_custom_parameters_are_validated_and_unknown_types_are_400(api):
    assert_error(api.post("/tasks", json={"type": "Shout", "parameters": {}}), 400, "VALIDATION_ERROR")
    assert_error(api.post("/tasks", json={"type": "Shout", "parameters": {"text": 1}}), 400, "VALIDATION_ERROR")
    body = assert_error(api.post("/tasks", json={"type": "Whisper", "parameters": {}}), 400, "UNKNOWN_TASK_TYPE")
    assert "Shout" in body["details"]["known"]
