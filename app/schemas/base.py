"""Schema base: snake_case in Python, camelCase on the wire; UTC timestamps with `Z`."""
from __future__ import annotations

import re
import unicodedata
from datetime import timezone

from marshmallow import RAISE, Schema, ValidationError, fields, validate

DIGITS = re.compile(r"-?[0-9]{1,40}")
# The same rules as OpenAPI `pattern`s (ECMA-262 regular expressions), so that the document says
# what the API accepts: no control characters; at least one character that is not a space.
NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f\s][^\x00-\x1f\x7f-\x9f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"  # tabs and line breaks allowed
UNSAFE_CATEGORIES = frozenset({"Cc", "Cs"})  # C0, DEL and C1 controls; halves of surrogate pairs


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class CamelSchema(Schema):
    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name, field_obj):
        field_obj.data_key = camelcase(field_obj.data_key or field_name)


def unsafe_character(text: str, allowed: str = "") -> str | None:
    """The first character of `text` that no name may hold (None if there is none): a control
    character (C0, DEL, C1: a NUL cannot be stored in PostgreSQL, CR/LF split headers and log
    lines, ESC drives terminals) or half of a surrogate pair (no UTF-8 spells it). `allowed`
    exempts a few (e.g. line breaks in a description). Other characters (bidirectional marks,
    line separators) are allowed and carried safely wherever a name goes (tests/api/test_files.py)."""
    for character in text:
        if character not in allowed and unicodedata.category(character) in UNSAFE_CATEGORIES:
            return character
    return None


def check_text(text: str, what: str, allowed: str = "") -> None:
    """ValidationError naming the first unsafe character of `text` (see unsafe_character)."""
    character = unsafe_character(text, allowed)
    if character is not None:
        raise ValidationError(f"The {what} may not contain the character U+{ord(character):04X}.")


class Name(fields.String):
    """A display name (of a bundle, a task...): 1 to `max_length` characters, not only spaces,
    none of them unsafe (see unsafe_character)."""

    def __init__(self, max_length: int = 255, what: str = "name", **kwargs):
        super().__init__(validate=validate.Length(min=1, max=max_length), metadata={"pattern": NAME_PATTERN},
                         **kwargs)
        self.what = what

    def _deserialize(self, value, attr, data, **kwargs):
        name = super()._deserialize(value, attr, data, **kwargs)
        if not name.strip():
            raise ValidationError(f"The {self.what} is empty.")
        check_text(name, self.what)
        return name


class Text(fields.String):
    """Free text (a description): up to `max_length` characters; tabs and line breaks are
    allowed, other unsafe characters are not."""

    def __init__(self, max_length: int = 4000, **kwargs):
        super().__init__(validate=validate.Length(max=max_length), metadata={"pattern": TEXT_PATTERN}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        check_text(text, "text", allowed="\t\n\r")
        return text


class QueryInt(fields.Integer):
    """An integer from a query string: ASCII digits, with an optional minus sign. (int() would
    also take ' 1', '1_000' and other scripts' digits.)"""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not DIGITS.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


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
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError as error:  # e.g. 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
            raise ValidationError("Out of range.") from error


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


def status_list(enum, **kwargs) -> fields.String:
    """A query parameter of comma-separated names of `enum` (e.g. 'Failed,Expired'), documented
    with the pattern it must match."""
    names = "|".join(member.name for member in enum)
    return fields.String(validate=status_names(enum), metadata={"pattern": f"^({names})(,({names}))*$"}, **kwargs)


def status_names(enum):
    """A validator of a comma-separated list of the names of `enum` (e.g. 'Failed,Expired')."""

    def validate(value: str) -> None:
        names = {member.name for member in enum}
        for name in value.split(","):
            if name.strip() not in names:
                raise ValidationError(f"Unknown status {name.strip()!r}; one of {sorted(names)}.")

    return validate
