"""Run the independent cells of a sweep serially, on local processes, or on a Dask cluster.

A *cell* is one independent unit of a sweep -- one (model, N) fit of ``learning-curve``, one
(attack, deployment) pair of ``report leakage``, one training size of ``bench cost``.  Each is a
pure function of its arguments and a seed, so :func:`map_cells` returns the same list, in the same
order, whatever runs it:

* ``"serial"`` (default): in this process, one after the other.
* ``"local"``: a Dask ``LocalCluster`` of one single-threaded worker process per core (at most
  one per cell).
* ``"tcp://HOST:PORT"``: an existing Dask scheduler -- start one with ``dask scheduler`` on one
  machine and ``dask worker tcp://HOST:8786`` on each of the others (every machine needs secureml
  installed, and the data files where the cells read them).  Cells of ``bench cost`` and
  ``report leakage`` start a server process, so start those workers with
  ``DASK_DISTRIBUTED__WORKER__DAEMON=False`` in their environment.

Dask and distributed are in the ``research`` extra (``pip install secureml[research]``).  Timing
cells (``bench cost``) measured in parallel on one machine compete for its cores: compare their
times only with runs of the same scheduler.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

from secureml.errors import SecureMLError

__all__ = ["map_cells", "SCHEDULER_HELP", "add_scheduler_argument"]

SCHEDULER_HELP = ("where independent cells run: serial (default, this process), local (a Dask "
                  "LocalCluster, one worker process per core) or tcp://HOST:PORT (a Dask scheduler "
                  "of a cluster)")


def add_scheduler_argument(parser: Any) -> None:
    """The common ``--scheduler`` flag."""
    parser.add_argument("--scheduler", default="serial", metavar="serial|local|tcp://HOST:PORT",
                        help=SCHEDULER_HELP)


def _check(scheduler: str) -> None:
    if scheduler not in ("serial", "local") and not scheduler.startswith(("tcp://", "tls://")):
        raise SecureMLError(f"--scheduler must be serial, local or tcp://HOST:PORT, got {scheduler!r}")


def map_cells(fn: Callable[[Any], Any], cells: Sequence[Any], scheduler: str = "serial",
              progress: Callable[[Any, Any], None] | None = None, n_workers: int | None = None) -> list[Any]:
    """``[fn(c) for c in cells]``, computed where ``scheduler`` says; results in cell order.

    ``fn`` and the cells are shipped to worker processes (cloudpickle): keep them small and
    module-level.  ``progress(cell, result)`` is called here as each cell finishes.  An exception
    in a cell is raised here, as it would be serially.
    """
    _check(scheduler)
    cells = list(cells)
    if scheduler == "serial" or not cells:
        out = []
        for c in cells:
            r = fn(c)
            if progress:
                progress(c, r)
            out.append(r)
        return out
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SecureMLError("--scheduler needs Dask: pip install 'secureml[research]' (dask, distributed)") from None
    cluster = None
    if scheduler == "local":
        import dask

        workers = n_workers or max(1, min(len(cells), os.cpu_count() or 1))
        # cells that run a two-party protocol start a server process: workers must not be daemons
        dask.config.set({"distributed.worker.daemon": False})
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise SecureMLError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        futures = client.map(fn, cells, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(cells)
        for fut in as_completed(futures):
            i = index[fut.key]
            results[i] = fut.result()
            if progress:
                progress(cells[i], results[i])
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def chunks(seq: Iterable[Any], size: int) -> list[list[Any]]:
    """Consecutive pieces of at most ``size`` items."""
    seq = list(seq)
    return [seq[i:i + size] for i in range(0, len(seq), size)]
