"""Process-wide runtime settings: how many threads torch uses for one operation.

torch starts with one intra-op thread per core it sees. Several processes on one machine (DDP
ranks, or a study next to other jobs) then ask for more threads than there are cores, and the
threads spin-wait on each other: on a loaded 2-core machine, generation with 2 threads ran 6-7x
slower than with 1. So every stage sets the count deliberately instead of inheriting torch's.
"""

from __future__ import annotations

import logging
import os

from knowpack.errors import KnowpackError

logger = logging.getLogger(__name__)

# Environment variables with the number of processes on this machine: torchrun / accelerate
# launch set LOCAL_WORLD_SIZE, MPI launchers their own names.
_LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")

_explicit: int | None = None
# The thread count a parent knowpack process was asked for (``--threads``), for its children.
THREADS_ENV = "KNOWPACK_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity masks (macOS)
        return os.cpu_count() or 1


def local_processes() -> int:
    """How many processes of this job share the machine (1 outside a distributed launch)."""
    for name in _LOCAL_SIZE_VARS:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def default_threads() -> int:
    """One share of the usable cores per local process, at least 1."""
    return max(1, usable_cores() // local_processes())


def _check_count(requested) -> int:
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise KnowpackError(f"invalid thread count {requested!r}", hint="pass a whole number of at least 1")
    return requested


def request_threads(requested: int) -> None:
    """Remember the user's thread count (``--threads``) without importing torch.

    The CLI calls this before any command runs; the count also goes to ``KNOWPACK_THREADS`` so
    processes this one starts (training ranks, Ray workers on this machine) inherit it.
    """
    global _explicit
    _explicit = _check_count(requested)
    os.environ[THREADS_ENV] = str(requested)


def _requested() -> int | None:
    if _explicit is not None:
        return _explicit
    value = os.environ.get(THREADS_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    ``requested`` wins and is remembered for the rest of the process: the CLI sets it once from
    a global option (:func:`request_threads`) and every model load then calls
    ``configure_threads(None)``, which must not undo the user's choice. Without any request
    (nor ``KNOWPACK_THREADS``), the default is :func:`default_threads` (usable cores divided by
    the local processes).
    """
    global _explicit
    import torch

    if requested is not None:
        _explicit = _check_count(requested)
    wanted = _requested()
    threads = wanted if wanted is not None else default_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    logger.debug("torch intra-op threads: %d (%s; %d usable cores, %d local process(es))", threads,
                 "requested" if wanted is not None else "default", usable_cores(), local_processes())
    return threads
