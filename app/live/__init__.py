"""Live events to clients: the per-process hub that listens to Redis, and the WebSocket and
server-sent-events routes that relay an account's events to it (and only to it)."""
