"""Trusting a reverse proxy's X-Forwarded-* headers (werkzeug ProxyFix).

Each PROXY_FIX_X_* setting is how many proxies in front of the app set that header; 0 (the
default) ignores it, since a client can send any X-Forwarded-* itself. With nginx alone in
front, 1 each: the client's address (X-Forwarded-For) becomes `request.remote_addr` (rate
limit keys, audit lines), the scheme and host (X-Forwarded-Proto, -Host) those of the request,
and X-Forwarded-Prefix its script root, which the links the API hands back start with.
"""
from __future__ import annotations

from werkzeug.middleware.proxy_fix import ProxyFix

HEADERS = ("for", "proto", "host", "port", "prefix")


def init_proxy_fix(app) -> None:
    counts = {name: int(app.config[f"PROXY_FIX_X_{name.upper()}"] or 0) for name in HEADERS}
    for name, count in counts.items():
        if count < 0:
            raise ValueError(f"PROXY_FIX_X_{name.upper()} must be 0 or more, not {count}")
    if any(counts.values()):
        app.wsgi_app = ProxyFix(app.wsgi_app, **{f"x_{name}": count for name, count in counts.items()})
