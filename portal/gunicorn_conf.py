"""Gunicorn settings for long-lived WebSockets (see docs/terminal.md, "Worker model").

One worker process by default. With REDIS_URL set, PORTAL_WORKERS=N runs N workers: each
holds the terminals it opened; a re-attach (`?session=`) accepted by another worker is
served there and relayed to the owner over Redis (portal/terminal/relay.py), so no sticky
routing is needed; revocations, DELETE, watchers and tickets cross workers through Redis.
`gthread` with many threads: each open terminal holds one request thread for its socket,
so `threads` bounds the number of terminals (plus page requests) one instance serves.
Measured with bench/bench_terminal.py; results in docs/benchmarks.md.
"""

import os
import sys

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("PORTAL_WORKERS", "1"))
if workers > 1 and not os.environ.get("REDIS_URL"):
    # Revocations, DELETE, watchers and tickets reach other workers only through Redis.
    print(
        f"PORTAL_WORKERS={workers} needs REDIS_URL (workers share terminal events through it):"
        " running 1 worker",
        file=sys.stderr,
    )
    workers = 1
worker_class = os.environ.get("PORTAL_WORKER_CLASS", "gthread")
threads = int(os.environ.get("PORTAL_THREADS", "1024"))
worker_connections = int(os.environ.get("PORTAL_WORKER_CONNECTIONS", "2000"))
backlog = 2048
timeout = 60  # worker heartbeat, not a per-request limit: WebSockets stay open for hours
graceful_timeout = 15
keepalive = 30
max_requests = 0  # never recycle a worker that holds live terminals
preload_app = False
# gunicorn (>= 25.1) listens on a control socket in $HOME by default (gunicornc: worker
# counts, reload, shutdown). The portal needs none, and two instances on one host would
# share its path: nothing of the portal's listens on a Unix socket.
control_socket_disable = True
accesslog = "-" if os.environ.get("PORTAL_ACCESS_LOG", "1") == "1" else None
# Query strings may carry ?token= (WebXTerm clients): never log them.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'


# Garbage collector, tuned for a process that holds hundreds of live terminals: with the
# defaults (700, 10, 10), 500 busy sessions saw a full collection (~110-160 ms with the GIL
# held, every terminal frozen) and gen-1 passes of ~20 ms within seconds, which set the
# p99 echo. The app's own objects are frozen once loaded (never scanned again), young
# collections run every 10,000 net allocations instead of 700, and full ones 10x rarer.
# Cyclic garbage still goes; it may just wait longer. PORTAL_GC_THRESHOLD="a,b,c"
# overrides the thresholds ("" keeps the interpreter's defaults and skips the freeze).
GC_THRESHOLD = os.environ.get("PORTAL_GC_THRESHOLD", "10000,20,100")


def post_worker_init(worker):
    import gc
    import sys

    # The terminal's background work starts with the worker, not with its first terminal:
    # from the start it answers other workers' requests (bus: close, watch, re-attach relays).
    app = getattr(worker, "wsgi", None)
    registry = getattr(app, "extensions", {}).get("portal_terminal")
    if registry is not None:
        registry.ensure_started()
        from portal.terminal import on_serve

        on_serve(app)  # no ghosts from an earlier incarnation of this server (new hostname)
    if not GC_THRESHOLD.strip():
        return
    try:
        values = [int(x) for x in GC_THRESHOLD.split(",")]
        if not 1 <= len(values) <= 3 or min(values) < 1:
            raise ValueError
    except ValueError:
        print(
            f"PORTAL_GC_THRESHOLD={GC_THRESHOLD!r} ignored: expected 1 to 3 positive integers",
            file=sys.stderr,
        )
        return
    gc.freeze()
    gc.set_threshold(*values)


def worker_exit(server, worker):
    """Close live terminals with a reason (and mark them closed) before the worker goes."""
    app = getattr(worker, "wsgi", None)
    if app is None or not hasattr(app, "app_context"):
        return
    from portal import signals

    try:
        signals.shutdown(app)
    except Exception:  # noqa: S110 - best effort on the way out
        pass


# Metrics (portal/metrics.py): every worker writes its figures into one folder and a scrape
# served by any worker sums them. The folder must be known before the workers import
# prometheus_client; a private temporary one unless PROMETHEUS_MULTIPROC_DIR names one.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portal-metrics-")


def on_starting(server):
    """Figures left by an earlier run of this server are not this run's: start from zero."""
    import glob

    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server, worker):
    """A worker gone: its live gauges (terminals, watchers, SSH connections) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# Workers pinned one to a CPU each (docs/terminal.md, "Worker model"). Unpinned, a worker's
# ~1,000 threads ran on every CPU: a thread woken for the GIL (or for its socket) waited for
# a CPU another process held, the GIL went back and forth between CPUs, and on a VM a thread
# woken on another, idle vCPU starts 50-70 us later. One process serialises its Python on the
# GIL anyway, so a single worker loses little by keeping to one CPU (what runs without the
# GIL, hashing and encrypting large buffers, shares that CPU; file transfers measured no
# slower). Side by side on 2 vCPUs (2026-12-07) one worker pinned against unpinned measured
# echo p50 +0.33 vs +0.50 ms over raw ssh, `cat` 87 vs 59 MB/s, 500 terminals at ~1400
# keys/s p99 25 vs 193 ms at 47 vs 85 % CPU.
# PORTAL_PIN_WORKERS: "auto" (the default) pins a single worker and leaves several to the
# scheduler (pinned, a burst of 500 opens split unevenly between them: up to 480 vs 1,560
# threads, and twice hit the pool's connection limit); "1" pins every worker; "0" none (a
# host whose CPUs are shared with other busy, pinned work).
PIN_MODE = os.environ.get("PORTAL_PIN_WORKERS", "auto").strip().lower() or "auto"
if PIN_MODE not in ("auto", "0", "1"):
    print(
        f"PORTAL_PIN_WORKERS={PIN_MODE!r} ignored: expected auto, 1 or 0; using auto",
        file=sys.stderr,
    )
    PIN_MODE = "auto"
PIN_WORKERS = PIN_MODE == "1" or (PIN_MODE == "auto" and workers == 1)
_cpu_of_worker: dict[int, int] = {}  # worker age -> CPU (kept in the arbiter, copied by fork)


def pre_fork(server, worker):
    """Choose the new worker's CPU in the arbiter: the one fewest live workers hold."""
    if not PIN_WORKERS:
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    live = {w.age for w in server.WORKERS.values()}
    for age in [a for a in _cpu_of_worker if a not in live]:
        del _cpu_of_worker[age]
    load = {cpu: 0 for cpu in cpus}
    for cpu in _cpu_of_worker.values():
        if cpu in load:
            load[cpu] += 1
    _cpu_of_worker[worker.age] = min(cpus, key=lambda cpu: (load[cpu], cpu))


def post_fork(server, worker):
    cpu = _cpu_of_worker.get(worker.age)
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:  # the CPU left this process's set meanwhile: run unpinned
            pass
