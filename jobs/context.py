"""Running job functions inside an app context, also under a plain `rq worker`."""
from __future__ import annotations

import functools
import os

from flask import has_app_context

_process_app = None
_engine_pid = None


def _app():
    global _process_app
    if _process_app is None:
        from app import create_app  # noqa: PLC0415 - the app is built on first use, not at import

        _process_app = create_app()
    return _process_app


def with_app(func):
    """Run `func` in an app context with a database session of its own process."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if has_app_context():
            return _run(func, args, kwargs)
        with _app().app_context():
            return _run(func, args, kwargs)

    return wrapper


def _run(func, args, kwargs):
    global _engine_pid
    from app.extensions import db  # noqa: PLC0415

    if _engine_pid != os.getpid():
        # a forked work-horse must not share the parent's pooled connections
        db.engine.dispose(close=False)
        _engine_pid = os.getpid()
    try:
        return func(*args, **kwargs)
    finally:
        db.session.remove()
