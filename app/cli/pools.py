from __future__ import annotations

import json

import click
from flask.cli import AppGroup
import sqlalchemy as sa

from app.audit import record
from app.cli.common import account_uuid, parse_size
from app.extensions import db
from app.models import Pool
from app.schemas.base import unsafe_character
from app.services.pools import ensure_default_pool
from app.storage import BACKENDS


@click.group(cls=AppGroup)
def pools():
    """Storage pools."""


def _pool_name(ctx, param, value: str) -> str:
    """Every account that may use a pool sees its name: 1 to 100 characters (its column), not
    only spaces, no control character."""
    if not value.strip() or len(value) > 100 or unsafe_character(value) is not None:
        raise click.BadParameter("a pool name is 1 to 100 characters, not only spaces, without control characters")
    return value


@pools.command("create")
@click.argument("name", callback=_pool_name)
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default="local", show_default=True)
@click.option("--root", help="Folder of a local pool (default: STORAGE_UPLOADS_PATH).")
@click.option("--max-file-size", help="Largest file accepted, e.g. 10GiB.")
@click.option("--accept", "accepted", multiple=True, help="Accepted content type, e.g. image/* (repeat).")
@click.option("--no-encryption", is_flag=True, help="Refuse encrypted uploads.")
@click.option("--chunk-size", help="Default chunk size, e.g. 8MiB.")
@click.option("--account", help="Make the pool private to this account UUID.")
@click.option("--description")
def create_pool(name, backend, root, max_file_size, accepted, no_encryption, chunk_size, account, description):
    """Create a pool NAME and print its id."""
    if db.session.scalar(sa.select(Pool).where(Pool.name == name)):
        raise click.ClickException(f"a pool named {name!r} exists already")
    pool = Pool(
        name=name, backend=backend, config={"root": root} if root else {}, description=description,
        max_file_size=parse_size(max_file_size) if max_file_size else None,
        accepted_types=list(accepted), allow_encryption=not no_encryption,
        default_chunk_size=parse_size(chunk_size) if chunk_size else None,
        account_id=account_uuid(account) if account else None,
    )
    db.session.add(pool)
    db.session.commit()
    record("pool.create", account=pool.account_id, ids={"poolId": str(pool.id)}, name=name, backend=backend)
    click.echo(str(pool.id))


@pools.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_pools(as_json):
    """List pools."""
    rows = list(db.session.scalars(sa.select(Pool).order_by(Pool.name)))
    if as_json:
        click.echo(json.dumps([{
            "id": str(p.id), "name": p.name, "backend": p.backend, "account": str(p.account_id or ""),
            "maxFileSize": p.max_file_size, "acceptedTypes": p.accepted_types,
            "allowEncryption": p.allow_encryption, "defaultChunkSize": p.default_chunk_size,
        } for p in rows], indent=2))
        return
    if not rows:
        click.echo("no pools yet: `flask pools ensure-default` or `flask pools create NAME`")
    for p in rows:
        click.echo(f"{p.id}  {p.name:<16} {p.backend:<6} max={p.max_file_size or '-'} "
                   f"types={','.join(p.accepted_types) or '*'} encryption={'yes' if p.allow_encryption else 'no'}"
                   f"{'  private:' + str(p.account_id) if p.account_id else ''}")


@pools.command("ensure-default")
def ensure_default():
    """Create the default local pool if it is missing; print its id."""
    click.echo(str(ensure_default_pool().id))
