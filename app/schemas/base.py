"""Schema base: snake_case in Python, camelCase on the wire; UTC timestamps with `Z`."""
from __future__ import annotations

from datetime import timezone

from marshmallow import RAISE, Schema, ValidationError, fields


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class CamelSchema(Schema):
    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name, field_obj):
        field_obj.data_key = camelcase(field_obj.data_key or field_name)


class UtcDateTime(fields.DateTime):
    """ISO 8601 in UTC with a trailing `Z`; input must carry a zone."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        if moment.tzinfo is None:
            raise ValidationError("Give a timezone, e.g. '2030-01-01T00:00:00Z'.")
        return moment.astimezone(timezone.utc)


class StrictInt(fields.Integer):
    """Integers only (no strings, floats or booleans), within a signed 64-bit column."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        number = super()._validated(value)
        if not -(2**63) <= number < 2**63:
            raise ValidationError("Out of range.")
        return number


def status_names(enum):
    """A validator of a comma-separated list of the names of `enum` (e.g. 'Failed,Expired')."""

    def validate(value: str) -> None:
        names = {member.name for member in enum}
        for name in value.split(","):
            if name.strip() not in names:
                raise ValidationError(f"Unknown status {name.strip()!r}; one of {sorted(names)}.")

    return validate
