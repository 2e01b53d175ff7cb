"""Cross-origin access to the API for browser clients on other origins (flask-cors).

CORS_ORIGINS lists the origins (`https://app.example.com`, comma-separated, compared exactly),
or `*`; empty leaves CORS off: no Access-Control-* header is ever sent. Tokens travel in the
Authorization header (or `?token=` for EventSource), never in cookies, so credentials are not
allowed. Preflights are answered for the headers the API reads, the chunk route's included;
the answers' own headers that a page needs are exposed (list totals, Retry-After, the request
id, the rate limit headers, download ranges).
"""
from __future__ import annotations

from flask_cors import CORS

RESOURCES = r"^/(api|drive)/.*"
ALLOW_HEADERS = ["Authorization", "Content-Type", "X-Chunk-SHA256", "X-Encrypt-Password", "X-Request-ID",
                 "Last-Event-ID", "Range", "If-Range", "If-None-Match"]
EXPOSE_HEADERS = ["X-Total", "Retry-After", "X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                  "X-RateLimit-Reset", "Content-Disposition", "Content-Range", "Accept-Ranges", "ETag"]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def allowed_origins(setting: str) -> list[str]:
    return [origin.strip().rstrip("/") for origin in (setting or "").split(",") if origin.strip()]


def init_cors(app) -> None:
    origins = allowed_origins(app.config["CORS_ORIGINS"])
    if not origins:
        return
    CORS(app, resources={RESOURCES: {}}, origins="*" if "*" in origins else origins,
         allow_headers=ALLOW_HEADERS, expose_headers=EXPOSE_HEADERS, methods=METHODS,
         max_age=app.config["CORS_MAX_AGE"], supports_credentials=False, vary_header=True)
