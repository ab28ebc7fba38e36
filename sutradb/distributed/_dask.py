"""The engine: Dask distributed. The only module of sutradb that imports dask.

:class:`DaskEngine` is what :func:`sutradb.distributed.learn` needs from an engine
(submit a function, wait for the first of some futures, get a result, cancel),
:class:`EmbedderPlugin` loads the embedder once per worker process, and
:class:`DaskShardBackend` runs the operations of a
:class:`~sutradb.distributed.ShardedDatabase` as tasks on the workers. Another engine
(Ray, a process pool) would implement the same few methods; the rest of
:mod:`sutradb.distributed` never names Dask.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin, wait

from . import tasks

__all__ = ["local_cluster", "DaskEngine", "EmbedderPlugin", "DaskShardBackend"]


#: Dask settings of :func:`local_cluster` when it serves no dashboard.
_QUIET_DIAGNOSTICS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.system-monitor.disk": False,
}


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs) -> LocalCluster:
    """A Dask ``LocalCluster`` of worker processes bound to 127.0.0.1, without a
    dashboard (nothing listens on another address).

    Parameters
    ----------
    n_workers, threads_per_worker : int
        On a machine with ``c`` cores, ``n_workers * threads_per_worker = c``;
        embedding scales best with one thread per worker.
    **kwargs
        Passed to ``LocalCluster`` (``memory_limit``, ``silence_logs`` (default:
        warnings and errors only), ...).
    """
    kw: dict[str, Any] = {"host": "127.0.0.1", "dashboard_address": None, "processes": True,
          "silence_logs": logging.WARNING}
    kw.update(kwargs)
    # without a dashboard the scheduler still serves its small HTTP routes (health,
    # metrics) on the scheduler's host: on a free port, not on 8787
    kw["scheduler_kwargs"] = {"dashboard_address": "127.0.0.1:0", **(kw.get("scheduler_kwargs") or {})}
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's
    # mmap threshold: every large tensor of the model is then a fresh mmap + page
    # faults, and embedding runs 15-20% slower (measured, docs/distributed.md); the
    # workers of this cluster keep glibc's adaptive defaults
    cfg: dict[str, object] = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    if not kwargs.get("dashboard_address"):
        # Without a dashboard, Dask's diagnostics are pure cost on cores the model
        # needs: the workers' statistical profiler (a stack walk of the running task
        # every 10 ms; learn used 6-15% more CPU per text with it), the event-loop
        # tick of every server (50 per second, each taking the GIL from the model's
        # thread) and the system monitor (CPU, memory and disk counters twice a
        # second). With these settings an idle 2-worker cluster uses ~4% of a core
        # instead of ~10% (docs/distributed.md); Dask still warns of a blocked event
        # loop (after 3 s) and the memory limits keep their 100 ms monitor.
        cfg.update(_QUIET_DIAGNOSTICS)
    with dask.config.set(cfg):
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **kw)


class EmbedderPlugin(WorkerPlugin):  # type: ignore[misc]  # Dask is opaque to the checker (not followed)
    """Loads the job's embedder once in each worker process (and in every worker that
    joins later, or that the nanny restarts), with the model running on the worker's
    threads. Tasks find it by key (:func:`sutradb.distributed.tasks.install_embedder`).

    Parameters
    ----------
    key : str
        The spec string, or ``"object:<name>:<id>"`` for an embedder object.
    embedder : str or object
        A spec (each worker loads the model from its own installed files) or an
        embedder object (pickled once per worker).
    threads : int, optional
        Model threads per worker (default: the worker's thread count). Dask starts
        workers with ``OMP_NUM_THREADS=1``; the plugin sets torch's thread count
        explicitly.
    """

    idempotent = False

    def __init__(self, key: str, embedder, threads: int | None = None) -> None:
        self.key = key
        self.embedder = embedder
        self.threads = threads
        self.name = "sutradb-embedder-" + hashlib.sha1(key.encode()).hexdigest()[:12]

    def setup(self, worker) -> None:
        threads = self.threads or getattr(getattr(worker, "state", None), "nthreads", None)
        tasks.install_embedder(self.key, self.embedder, threads, quiet=True)


class DaskEngine:
    """Runs the tasks of a job on a Dask cluster through ``client``."""

    name = "dask"

    def __init__(self, client: Client) -> None:
        if not isinstance(client, Client):
            from ..errors import InvalidArgumentError
            raise InvalidArgumentError(f"client must be a dask.distributed.Client, not "
                                       f"{type(client).__name__}")
        self.client = client

    def _workers(self) -> dict:
        return self.client.nthreads()          # {address: threads}

    @property
    def workers(self) -> int:
        return len(self._workers())

    @property
    def threads(self) -> int:
        return sum(int(t) for t in self._workers().values()) or 1

    @property
    def task_slots(self) -> int:
        """Tasks the cluster runs at once (its threads)."""
        return self.threads

    #: kernel threads a task may use: one per worker thread, as the worker runs tasks
    task_threads = 1

    def describe(self) -> str:
        return f"dask ({self.workers} workers, {self.threads} threads, {self.client.scheduler.address})"

    def setup_workers(self, key: str, embedder, threads: int | None) -> dict:
        """Register the embedder plugin (runs on every worker now and on later ones)
        and return ``{"name", "dim"}`` of the embedder, as a worker loaded it."""
        if not self._workers():
            self.client.wait_for_workers(1, timeout=120)
        self.client.register_plugin(EmbedderPlugin(key, embedder, threads))
        return self.submit(tasks.embedder_info, key).result()

    def submit(self, fn, *args, key: str | None = None, **kwargs):
        return self.client.submit(fn, *args, key=key, pure=False, **kwargs)

    def wait_first(self, futures) -> set:
        done, _ = wait(list(futures), return_when="FIRST_COMPLETED")
        return set(done)

    @staticmethod
    def is_done(f) -> bool:
        return f.done()

    @staticmethod
    def result(f):
        return f.result()

    def cancel(self, futures) -> None:
        fs = [f for f in futures if f is not None]
        if fs:
            self.client.cancel(fs)


class DaskShardBackend:
    """A :class:`~sutradb.distributed.ShardedDatabase` backend whose shard operations
    run as tasks on the workers: each worker opens a shard read-only once (the shard
    paths must be reachable there: shared storage) and keeps it open."""

    name = "dask"

    def __init__(self, client: Client, paths: list[str]) -> None:
        self.client = client
        self.paths = list(paths)
        self.token: str | None = None

    def map(self, fn, args_per_shard) -> list:
        fs = [self.client.submit(tasks.shard_op, p, fn, tuple(a), self.token, pure=False)
              for p, a in zip(self.paths, args_per_shard)]
        return self.client.gather(fs)

    def call(self, shard: int, fn, *args):
        return self.client.submit(tasks.shard_op, self.paths[shard], fn, args, self.token,
                                  pure=False).result()

    def run(self, fn, *args):
        """``fn(*args)`` on a worker (where the shards are)."""
        return self.client.submit(fn, *args, pure=False).result()

    def refresh(self) -> None:
        """Make the workers reopen the shards at the next call."""
        import uuid
        self.token = uuid.uuid4().hex

    def close(self) -> None:
        pass
