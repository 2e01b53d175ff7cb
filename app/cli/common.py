from __future__ import annotations

import uuid

import click


def account_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as error:
        raise click.BadParameter(f"{value!r} is not a UUID") from error


def parse_size(text: str) -> int:
    """Bytes from '1048576', '10MiB', '5GB', '1.5GiB'."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    text = text.strip().upper()
    number = text.rstrip("KMGTIB")
    unit = text[len(number):]
    try:
        value = float(number)
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not a size such as 10GiB") from error
    if unit not in units or value < 0:
        raise click.BadParameter(f"{text!r} is not a size such as 10GiB")
    return int(value * units[unit])
