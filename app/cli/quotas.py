from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from app.audit import record
from app.cli.common import account_uuid, parse_size
from app.services import quotas as quota_service


@click.group(cls=AppGroup)
def quotas():
    """Per-account storage quotas."""


@quotas.command("set")
@click.argument("account_id")
@click.argument("limit", required=False)
@click.option("--unlimited", is_flag=True, help="No limit for this account.")
@click.option("--default", "use_default", is_flag=True, help="Back to QUOTA_DEFAULT_BYTES.")
def set_quota(account_id, limit, unlimited, use_default):
    """Set ACCOUNT_ID's quota to LIMIT (e.g. 10GiB)."""
    if sum(bool(x) for x in (limit, unlimited, use_default)) != 1:
        raise click.UsageError("give exactly one of LIMIT, --unlimited or --default")
    value = -1 if unlimited else None if use_default else parse_size(limit)
    quota_service.set_limit(account_uuid(account_id), value)
    record("quota.set", account=account_uuid(account_id), limitBytes=value)  # -1 unlimited, None the default
    click.echo(json.dumps(quota_service.usage(account_uuid(account_id))))


@quotas.command("show")
@click.argument("account_id")
def show_quota(account_id):
    """Show ACCOUNT_ID's limit and usage (stored files and reservations of open uploads)."""
    click.echo(json.dumps(quota_service.usage(account_uuid(account_id)), indent=2))
