"""Operator commands, grouped by domain: `flask tokens|pools|quotas|uploads|push|tasks ...`,
`flask serve` (everything), `flask worker`, `flask scheduler`, `flask redis`."""
from __future__ import annotations


def register(app) -> None:
    from app.cli.pools import pools
    from app.cli.push import push
    from app.cli.quotas import quotas
    from app.cli.runtime import redis_group, scheduler, serve, worker
    from app.cli.tasks import tasks
    from app.cli.tokens import tokens
    from app.cli.uploads import uploads

    for command in (tokens, pools, quotas, uploads, push, tasks, worker, scheduler, serve, redis_group):
        app.cli.add_command(command)
