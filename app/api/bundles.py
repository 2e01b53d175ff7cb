"""/bundles: create, list, get."""
from __future__ import annotations

from flask import g

from app.api import api
from app.api.decorators import arguments, body, response
from app.schemas.files import BundleSchema, CreateBundleSchema, ListQuerySchema
from app.services import bundles


@api.post("/bundles")
@body(CreateBundleSchema)
@response(BundleSchema, 201, "The new bundle")
def create_bundle(data):
    """Create a bundle."""
    return bundles.create_bundle(g.account_id, data)


@api.get("/bundles")
@arguments(ListQuerySchema)
@response(BundleSchema, 200, "The account's bundles; X-Total holds the count", many=True)
def list_bundles(query):
    """List the account's bundles."""
    rows, total = bundles.list_bundles(g.account_id, query["offset"], query["limit"])
    return rows, {"X-Total": str(total)}


@api.get("/bundles/<bundle_id>")
@response(BundleSchema)
def get_bundle(bundle_id):
    """A bundle."""
    return bundles.get_bundle(bundle_id, g.account_id)
