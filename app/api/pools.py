"""/pools: the pools this account may upload to (policy only, never configuration)."""
from __future__ import annotations

from flask import g

from app.api import api
from app.api.decorators import response
from app.schemas.files import PoolSchema
from app.services.pools import ensure_default_pool, visible_pools


@api.get("/pools")
@response(PoolSchema, 200, "Pools this account may use", many=True)
def list_pools():
    """List the pools this account may use."""
    ensure_default_pool()
    return visible_pools(g.account_id)
