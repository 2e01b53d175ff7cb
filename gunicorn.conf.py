"""gunicorn reads this file by default when started in this folder (the Procfile, `flask serve`
and the tests do); elsewhere pass `--config /path/to/gunicorn.conf.py`. It sets nothing but
the hooks that keep /metrics right across worker processes (app/metrics.py):

- on_starting: the master gives its workers an empty metrics directory of this server's own;
- post_worker_init: a worker makes its metric files as soon as its app is loaded;
- child_exit: a worker that ended, however, stops counting in the live gauges (open sockets);
- on_exit: the directory goes with the server.
"""
from app import metrics


def on_starting(server):
    metrics.start_server()


def post_worker_init(worker):
    metrics.open_process_metrics()


def child_exit(server, worker):
    metrics.forget_process(worker.pid)


def on_exit(server):
    metrics.stop_server()
