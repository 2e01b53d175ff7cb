from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from app.services.cleanup import run_cleanup


@click.group(cls=AppGroup)
def uploads():
    """Uploads."""


@uploads.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def cleanup(dry_run):
    """Expire stale uploads, remove expired files and orphaned objects."""
    click.echo(json.dumps(run_cleanup(dry_run=dry_run), indent=2))
