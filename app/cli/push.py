from __future__ import annotations

import click
from flask.cli import AppGroup

from app.services.push import generate_vapid_keys


@click.group(cls=AppGroup)
def push():
    """Web Push notifications."""


@push.command("vapid-keys")
def vapid_keys():
    """Generate the server's VAPID key pair (P-256) and print the two lines to put in the
    environment of the web and worker processes. Browsers subscribed with the old public key
    stop receiving pushes when it changes: generate it once."""
    private, public = generate_vapid_keys()
    click.echo(f"VAPID_PRIVATE_KEY={private}")
    click.echo(f"VAPID_PUBLIC_KEY={public}")
