"""Migrations: one head; upgrade, downgrade to nothing and upgrade again on a fresh database of
the backend in use (a new SQLite file, or a new PostgreSQL schema); the models match them."""
from __future__ import annotations

import os
import secrets
from urllib.parse import quote

import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from config import Config
from tests.support import ROOT

MIGRATIONS = os.path.join(ROOT, "migrations")
TABLES = {"bundles", "pools", "quotas", "files", "upload_tasks", "upload_chunks", "push_subscriptions", "tasks"}


def script_directory() -> ScriptDirectory:
    config = AlembicConfig(os.path.join(MIGRATIONS, "alembic.ini"))
    config.set_main_option("script_location", MIGRATIONS)
    return ScriptDirectory.from_config(config)


def test_exactly_one_head():
    scripts = script_directory()
    assert len(scripts.get_heads()) == 1, scripts.get_heads()
    assert len(scripts.get_bases()) == 1, scripts.get_bases()
    # a straight line: no revision is the parent of two others
    parents = [r.down_revision for r in scripts.walk_revisions()]
    assert len(parents) == len(set(map(str, parents)))


def _admin_engine(base_url: str):
    return sa.create_engine(Config(DATABASE_URL=base_url).to_flask("/tmp")["DATABASE_URL"])


@pytest.fixture()
def fresh_database_url(tmp_path):
    """A database nobody has touched, of the backend this session runs on."""
    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        yield "sqlite:///" + str(tmp_path / "fresh.sqlite3")
        return
    schema = "m_" + secrets.token_hex(6)
    engine = _admin_engine(base_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture()
def fresh_app(settings, fresh_database_url):
    from app import create_app  # noqa: PLC0415
    from app.extensions import db  # noqa: PLC0415

    application = create_app(Config.from_env(settings, DATABASE_URL=fresh_database_url))
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


def table_names() -> set[str]:
    from app.extensions import db  # noqa: PLC0415

    return set(sa.inspect(db.engine).get_table_names())


def test_upgrade_downgrade_upgrade(fresh_app):
    from app.extensions import db  # noqa: PLC0415

    assert table_names() == set()
    head = script_directory().get_current_head()

    flask_migrate.upgrade()
    assert table_names() == TABLES | {"alembic_version"}
    assert db.session.scalar(sa.text("SELECT version_num FROM alembic_version")) == head
    db.session.rollback()

    flask_migrate.downgrade(revision="base")
    assert table_names() == {"alembic_version"}
    assert db.session.scalar(sa.text("SELECT count(*) FROM alembic_version")) == 0
    if db.engine.dialect.name == "postgresql":
        leftovers = db.session.execute(sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname <> 'alembic_version' "
            "AND c.relname NOT LIKE 'pk_alembic_version%' AND c.relname NOT LIKE 'alembic_version_pkc%'"
        )).scalars().all()
        types = db.session.execute(sa.text(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = current_schema() AND t.typtype = 'e'")).scalars().all()
        assert leftovers == [] and types == [], (leftovers, types)
    else:
        indexes = db.session.execute(sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name <> 'alembic_version'")).scalars().all()
        assert indexes == []
    db.session.rollback()

    flask_migrate.upgrade()
    assert table_names() == TABLES | {"alembic_version"}
    assert db.session.scalar(sa.text("SELECT version_num FROM alembic_version")) == head
    db.session.rollback()


def test_models_match_migrations(fresh_app):
    from app.extensions import db  # noqa: PLC0415
    import app.models  # noqa: F401,PLC0415 - every model registered on the metadata

    flask_migrate.upgrade()
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "render_as_batch": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == [], differences


def test_the_migrated_schema_works(fresh_app):
    """A smoke test of the upgraded schema: the unique (task, index) constraint exists."""
    import uuid  # noqa: PLC0415

    from sqlalchemy.exc import IntegrityError  # noqa: PLC0415

    from app.extensions import db  # noqa: PLC0415
    from app.models import Pool, UploadChunk, UploadStatus, UploadTask  # noqa: PLC0415
    from app.models.types import utcnow  # noqa: PLC0415

    flask_migrate.upgrade()
    pool = Pool(name="p", backend="local", config={})
    db.session.add(pool)
    db.session.flush()
    task = UploadTask(task_id=uuid.uuid4().hex, file_name="f", file_size=2, content_type="a/b", chunk_size=1,
                      chunks_count=2, pool_id=pool.id, hash="0" * 64, account_id=uuid.uuid4(),
                      status=UploadStatus.InProgress)
    db.session.add(task)
    db.session.flush()
    db.session.add(UploadChunk(task_id=task.id, chunk_index=0, size=1, sha256="a" * 64, storage_key="k1",
                               created_at=utcnow()))
    db.session.commit()
    db.session.add(UploadChunk(task_id=task.id, chunk_index=0, size=1, sha256="b" * 64, storage_key="k2",
                               created_at=utcnow()))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UploadChunk)) == 1
