"""Wire shapes of files, pools and bundles. Nothing secret is ever dumped here: no pool
config (it may hold credentials), no encryption parameters."""
from __future__ import annotations

from marshmallow import fields, validate

from app.schemas.base import CamelSchema, Name, QueryInt, Text, UtcDateTime


class CloudFileSchema(CamelSchema):
    id = fields.UUID()
    name = fields.String()
    description = fields.String(allow_none=True)
    mime_type = fields.String()
    size = fields.Integer()
    hash = fields.String()
    file_meta = fields.Dict()
    user_meta = fields.Dict()
    is_encrypted = fields.Boolean()
    pool_id = fields.UUID()
    bundle_id = fields.UUID(allow_none=True)
    account_id = fields.UUID()
    expired_at = UtcDateTime(allow_none=True)
    uploaded_at = UtcDateTime()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class PoolSchema(CamelSchema):
    id = fields.UUID()
    name = fields.String()
    description = fields.String(allow_none=True)
    backend = fields.String()
    is_private = fields.Function(lambda pool: pool.account_id is not None)
    max_file_size = fields.Integer(allow_none=True)
    accepted_types = fields.List(fields.String())
    allow_encryption = fields.Boolean()
    default_chunk_size = fields.Integer(allow_none=True)


class BundleSchema(CamelSchema):
    id = fields.UUID()
    name = fields.String()
    description = fields.String(allow_none=True)
    account_id = fields.UUID()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class CreateBundleSchema(CamelSchema):
    name = Name(required=True, what="bundle name")
    description = Text(allow_none=True)


class ListQuerySchema(CamelSchema):
    offset = QueryInt(load_default=0, validate=validate.Range(min=0, max=2**31))
    limit = QueryInt(load_default=50, validate=validate.Range(min=1, max=200))

    class Meta:
        unknown = "exclude"
