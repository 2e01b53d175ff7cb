"""Engine set-up that differs per database."""
from __future__ import annotations

from sqlalchemy import event

from app.extensions import db


def configure_engine(app) -> None:
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection, _record):
        # Let SQLAlchemy's BEGIN below, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection):
        # Take the write lock at BEGIN: a deferred transaction that later writes can fail
        # with SQLITE_BUSY at once when another process wrote meanwhile, whatever the timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
