"""Celery peer of bench/peers (run with Debian's /usr/bin/python3).

  python3 benchtasks.py preload --jobs N [--chunk 1000]
      group(noop.s(i) ...).apply_async() in chunks of 1,000
  python3 benchtasks.py worker --jobs N --concurrency 2
      a prefork worker; it starts consuming the job queue only after the
      driver writes GO (READY/GO handshake: the worker boots on an empty
      queue, then adds a consumer for "celery" by a remote-control command)

env REDIS_SOCK: the private Redis' unix socket. Every completed job
increments the Redis key drover_bench:celery:done (the count the driver
verifies); results are not stored (no result backend, ignore_result).
"""
import os
import sys
import threading

import redis
from celery import Celery, group
from celery.signals import worker_ready

SOCK = os.environ["REDIS_SOCK"]
DONE_KEY = "drover_bench:celery:done"

app = Celery("benchtasks", broker=f"redis+socket://{SOCK}")
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
)

_client = None


@app.task(name="noop")
def noop(i=None):
    global _client
    if _client is None:
        _client = redis.Redis(unix_socket_path=SOCK)
    _client.incr(DONE_KEY)


def arg(name, default):
    if f"--{name}" in sys.argv:
        return sys.argv[sys.argv.index(f"--{name}") + 1]
    return default


@worker_ready.connect
def _ready(sender=None, **_):
    hostname = sender.hostname

    def wait_go():
        print("READY", flush=True)
        line = sys.stdin.readline()
        if "GO" not in line:
            print("stdin closed before GO", file=sys.stderr, flush=True)
            os._exit(3)
        app.control.add_consumer("celery", destination=[hostname], reply=True, timeout=10)
        print("CONSUMING", flush=True)

    threading.Thread(target=wait_go, daemon=True).start()


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "preload":
        jobs = int(arg("jobs", 100000))
        chunk = int(arg("chunk", 1000))
        for start in range(0, jobs, chunk):
            n = min(chunk, jobs - start)
            group(noop.s(start + k) for k in range(n)).apply_async()
    elif cmd == "worker":
        conc = arg("concurrency", "2")
        app.worker_main([
            "worker", "-P", "prefork", "-c", conc, "-Q", "drover_bench_gate",
            "-l", "WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-n", f"bench{os.getpid()}@%h",
        ])
    else:
        print("usage: python3 benchtasks.py preload|worker [options]", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
