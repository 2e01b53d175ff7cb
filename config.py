"""Settings, read from the environment when the app factory runs (never at import time).

`Config.from_env()` builds the settings of a process; tests build their own `Config` with
overrides instead of patching the environment. Every variable is listed in the README's
configuration table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

MIB = 1024 * 1024


def _int(env, name, default):
    value = env.get(name)
    return default if value in (None, "") else int(value)


def _bool(env, name, default):
    value = env.get(name)
    if value in (None, ""):
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Config:
    INSTANCE_PATH: str = ""
    DATABASE_URL: str = ""                 # empty: SQLite file under the instance folder
    REDIS_URL: str = ""                    # empty: an embedded redis-server on a unix socket
    JWT_SECRET: str = "dev-only-secret-set-JWT_SECRET-in-production"
    JWT_ALGORITHM: str = "HS256"
    STORAGE_UPLOADS_PATH: str = ""         # empty: <instance>/uploads
    STORAGE_PREFERRED_REMOTE: str = ""     # id of the pool used when a create names none
    STORAGE_FSYNC: bool = True             # fsync chunks and files before recording them
    UPLOAD_HASH_AHEAD: bool = True         # web processes advance the whole file's SHA-256 as chunks arrive
    UPLOAD_DEFAULT_CHUNK_SIZE: int = 5 * MIB
    UPLOAD_MAX_CHUNK_SIZE: int = 16 * MIB
    UPLOAD_MIN_CHUNK_SIZE: int = 1 * MIB
    UPLOAD_MAX_FILE_SIZE: int = 1024 * 1024 * MIB   # 1 TiB, for pools without a limit
    UPLOAD_STALE_THRESHOLD_HOURS: int = 24
    UPLOAD_CLEANUP_INTERVAL_MINUTES: int = 60
    UPLOAD_CACHE_DURATION_MINUTES: int = 30
    UPLOAD_COMPLETE_WAIT_SECONDS: int = 30
    UPLOAD_FINALIZE_TIMEOUT_SECONDS: int = 3600
    UPLOAD_SPEED_WINDOW_SECONDS: int = 30
    QUEUE_PREFIX: str = ""                 # prefix of the RQ queue names (high, default, low)
    TASK_JOB_TIMEOUT_SECONDS: int = 6 * 3600   # RQ's hard limit for one run of a generic task
    TASK_HEARTBEAT_TIMEOUT_SECONDS: int = 60   # a running task silent this long, off any live worker, is recovered
    TASK_RECOVERY_INTERVAL_SECONDS: int = 30   # how often the scheduler looks for such tasks
    TASK_MAX_ATTEMPTS: int = 3                 # runs a task may start before recovery marks it Failed
    TASK_DECOMPRESS_MAX_TOTAL_BYTES: int = 10 * 1024 * MIB  # FileDecompress: most bytes one archive may expand to
    TASK_DECOMPRESS_MAX_ENTRIES: int = 10000   # FileDecompress: most entries one archive may have
    TASK_TYPE_MODULES: str = ""            # comma-separated modules whose register(app) adds task types
    TASK_RETENTION_DAYS: int = 30          # finished tasks older than this are removed (flask tasks cleanup)
    SECRET_KEY: str = ""                   # seals secrets held for workers; empty: JWT_SECRET is used
    LIVE_PING_INTERVAL_SECONDS: int = 25   # WebSocket pings; a client missing a pong is dropped
    LIVE_SSE_KEEPALIVE_SECONDS: int = 15   # SSE comment lines through idle proxies
    LIVE_IDLE_CHECK_SECONDS: int = 30      # a socket thread's check that its client is still there
    LIVE_AUTH_TIMEOUT_SECONDS: float = 10  # to send the first auth message
    LIVE_SEND_TIMEOUT_SECONDS: int = 10    # a client that stops reading is dropped after this
    METRICS_ENABLED: bool = True           # GET /metrics (Prometheus); off: no route, nothing recorded
    METRICS_DIR: str = ""                  # prometheus_client's multiprocess files; empty: <instance>/metrics
    METRICS_TOKEN: str = ""                # if set, /metrics needs Authorization: Bearer <it>
    QUOTA_DEFAULT_BYTES: int = 0           # 0: no limit for accounts without a quota row
    VAPID_PRIVATE_KEY: str = ""            # PEM or base64url raw P-256 key; empty: Web Push disabled
    VAPID_PUBLIC_KEY: str = ""             # optional: checked against the private key's public half
    VAPID_SUBJECT: str = "mailto:admin@localhost"  # VAPID `sub`: how push services reach the operator
    PUSH_TTL_SECONDS: int = 86400          # how long a push service keeps a message for an offline browser
    PUSH_ALLOW_INSECURE_ENDPOINTS: bool = False  # accept http://127.0.0.1 / localhost endpoints (tests)
    # Rate limits per route group (app/ratelimit.py), per account (else per client IP), in the
    # syntax of `limits` ("600/minute", several joined by ";"); empty: that group is not limited.
    RATELIMIT_ENABLED: bool = True
    RATELIMIT_CREATE: str = "600/minute"     # POST /files/upload/create and POST /tasks
    RATELIMIT_CHUNK: str = "12000/minute"    # chunk uploads (counted per request, not per byte)
    RATELIMIT_WRITE: str = "1200/minute"     # complete, cancel, delete and every other write
    RATELIMIT_READ: str = "3000/minute"      # GET routes of the API
    RATELIMIT_LIVE: str = "300/minute"       # WebSocket and SSE connections opened
    RATELIMIT_STRATEGY: str = "fixed-window"  # or "moving-window", "sliding-window-counter"
    CORS_ORIGINS: str = ""                 # comma-separated origins allowed cross-origin, or *; empty: CORS off
    CORS_MAX_AGE: int = 600                # seconds a browser may cache a preflight answer
    # X-Forwarded-* values to trust (werkzeug ProxyFix): how many proxies set each; 0: ignored
    PROXY_FIX_X_FOR: int = 0
    PROXY_FIX_X_PROTO: int = 0
    PROXY_FIX_X_HOST: int = 0
    PROXY_FIX_X_PORT: int = 0
    PROXY_FIX_X_PREFIX: int = 0
    AUDIT_LOG_PATH: str = ""               # audit JSON lines appended here; empty: to stderr
    AUDIT_LOG_CHUNKS: bool = False         # also a line per stored chunk (refused chunks always)
    LOG_LEVEL: str = "INFO"
    TESTING: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env=None, **overrides) -> "Config":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            if f.name == "extra" or f.name not in env:
                continue
            if f.type == "int":
                values[f.name] = _int(env, f.name, f.default)
            elif f.type == "float":
                values[f.name] = float(env[f.name]) if env[f.name] not in (None, "") else f.default
            elif f.type == "bool":
                values[f.name] = _bool(env, f.name, f.default)
            else:
                values[f.name] = env[f.name]
        values.update(overrides)
        return cls(**values)

    def to_flask(self, instance_path: str) -> dict:
        """The mapping loaded into `app.config`, with defaults that depend on the instance path."""
        instance = self.INSTANCE_PATH or instance_path
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        out["INSTANCE_PATH"] = instance
        out["DATABASE_URL"] = normalise_database_url(
            self.DATABASE_URL or "sqlite:///" + os.path.join(instance, "drive.sqlite3")
        )
        out["STORAGE_UPLOADS_PATH"] = self.STORAGE_UPLOADS_PATH or os.path.join(instance, "uploads")
        out["METRICS_DIR"] = os.path.abspath(self.METRICS_DIR or os.path.join(instance, "metrics"))
        out["SQLALCHEMY_DATABASE_URI"] = out["DATABASE_URL"]
        out["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(out["DATABASE_URL"])
        return out


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs written the usual way."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several processes (web, worker, CLI) share the file: wait for locks, not fail.
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
