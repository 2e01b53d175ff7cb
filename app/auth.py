"""Bearer JWT authentication (HS256 with JWT_SECRET by default; `sub` is the account UUID)."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import jwt
from flask import current_app, g, request

from app.errors import Unauthorized


def issue_token(account_id: uuid.UUID, *, admin: bool = False, ttl_hours: float = 24, app=None) -> str:
    config = (app or current_app).config
    now = datetime.now(timezone.utc)
    claims = {"sub": str(account_id), "iat": now, "nbf": now, "exp": now + timedelta(hours=ttl_hours)}
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, config["JWT_SECRET"], algorithm=config["JWT_ALGORITHM"])


def decode_token(token: str) -> tuple[uuid.UUID, dict]:
    """(account id, claims) of a valid token; Unauthorized for anything else."""
    config = current_app.config
    try:
        claims = jwt.decode(
            token,
            config["JWT_SECRET"],
            algorithms=[config["JWT_ALGORITHM"]],
            options={"require": ["sub", "exp"]},
            leeway=5,
        )
        account_id = uuid.UUID(str(claims["sub"]))
    except jwt.ExpiredSignatureError as error:
        raise Unauthorized("The token has expired", code="TOKEN_EXPIRED") from error
    except (jwt.InvalidTokenError, ValueError, TypeError, AttributeError) as error:
        raise Unauthorized("The token is not valid", code="INVALID_TOKEN") from error
    return account_id, claims


def is_admin(claims: dict | None) -> bool:
    """Whether a token's claims grant admin: exactly JSON `true`. A string such as "false" is
    truthy in Python and must not count."""
    return (claims or {}).get("admin") is True


def authenticate_request() -> None:
    """Set `g.account_id` and `g.claims` from the Authorization header, or raise 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="drive"'})
    g.account_id, g.claims = decode_token(token.strip())


def request_account() -> uuid.UUID | None:
    """The account of this request's bearer token (the header, else `?token=` as the live
    routes take it) when the token is valid, else None; never raises. For what must know the
    caller before, or without, the route's own authentication: the rate limiter's key and the
    audit log's account. Decoded once per request."""
    if "bearer_account" not in g:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        token = token or request.args.get("token", "")
        try:
            g.bearer_account = decode_token(token)[0] if token else None
        except Unauthorized:
            g.bearer_account = None
    return g.bearer_account
