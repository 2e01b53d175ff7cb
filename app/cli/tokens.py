from __future__ import annotations

import click
from flask.cli import AppGroup

from app.audit import record
from app.auth import issue_token
from app.cli.common import account_uuid


@click.group(cls=AppGroup)
def tokens():
    """Access tokens."""


@tokens.command("create")
@click.argument("account_id")
@click.option("--admin", is_flag=True, help="Give the token the admin claim.")
@click.option("--ttl", "ttl_hours", type=float, default=24.0, show_default=True, help="Hours it stays valid.")
def create_token(account_id, admin, ttl_hours):
    """Print a JWT (HS256, JWT_SECRET) for ACCOUNT_ID."""
    if ttl_hours <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--ttl")
    account = account_uuid(account_id)
    token = issue_token(account, admin=admin, ttl_hours=ttl_hours)
    record("token.issue", account=account, admin=admin, ttlHours=ttl_hours)  # never the token itself
    click.echo(token)
