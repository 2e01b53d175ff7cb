"""Fixtures of the service tests that go through a real gunicorn."""
from __future__ import annotations

import uuid

import pytest

from app.auth import issue_token
from tests.support import LiveClient


@pytest.fixture()
def live_client(app, live_server):
    """A client of the session's gunicorn for a new account."""
    with app.app_context():
        token = issue_token(uuid.uuid4())
    return LiveClient(live_server, token)
