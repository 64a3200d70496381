"""Several processes under ``accelerate launch``: who this process is, and how a failure stops all of them.

The engine is Hugging Face Accelerate over ``torch.distributed`` (gloo on CPUs, NCCL on GPUs); this module
only adds what the commands need on top of it:

- :func:`processes`: this process's ``accelerate.PartialState``, created once with the right device choice
  (CPU when no GPU is visible, so that ``torchrun``-started CPU workers join a gloo group), or a
  one-process stand-in when the run is not distributed (the core install classifies without accelerate);
- :func:`check_launch`: refuses the silent duplicate runs of ``accelerate launch --cpu --num_processes N``,
  whose launcher starts one process per machine without ``torch.distributed`` (it expects ``mpirun``);
- :class:`Guard`: a section of sharded work. Every ``check_seconds`` (``PECMAE_CHECK_SECONDS``, default
  10) the processes exchange their status with ``accelerate.utils.gather_object``; an exception on any
  rank stops every rank with :class:`~pecmae_hub.errors.ProcessGroupError` naming it, and a rank that
  is lost (killed, out of memory, its machine gone) makes the exchange fail, so that the others stop
  too, naming the rank(s) that missed the check-in (from the process group's store), within one
  interval plus one item of work;
- :class:`Terminated`: ``SIGTERM`` (what the launcher sends to the other processes of a machine when
  one of them fails) becomes an interruption that says so, instead of a silent death.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pecmae_hub.errors import ConfigError, ProcessGroupError

CHECK_SECONDS_ENV = "PECMAE_CHECK_SECONDS"
DEFAULT_CHECK_SECONDS = 10.0
_DISTRIBUTED_ENV = ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RESUME = "work finished so far is kept: rerun the same command to resume"


class Terminated(KeyboardInterrupt):
    """``SIGTERM`` under ``accelerate launch``: the launcher stopped this process, usually because another
    process of the run failed (the launcher's report names it)."""


class _OneProcess:
    """What a run without ``accelerate launch`` needs of ``PartialState``."""

    num_processes, process_index, local_process_index = 1, 0, 0
    is_main_process = is_local_main_process = is_last_process = True
    use_distributed = False

    @property
    def device(self):
        """CUDA when visible, else the CPU (what ``PartialState`` gives a plain run)."""
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @contextlib.contextmanager
    def split_between_processes(self, inputs, apply_padding: bool = False):
        yield inputs

    def wait_for_everyone(self) -> None:
        pass


def launched() -> bool:
    """True when this process was started by a distributed launcher (torchrun / ``accelerate launch``)."""
    return any(int(os.environ.get(var, "1") or 1) > 1 for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))


def check_launch() -> None:
    """Refuse ``accelerate launch --cpu`` with several processes or machines: it starts one process per
    machine that knows nothing of the others, so every copy would do all the work.

    Raises:
        ConfigError: naming the launch command that gives real CPU processes.
    """
    env = os.environ
    cpu_launcher = env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if cpu_launcher and "MASTER_ADDR" in env and not any(var in env for var in _DISTRIBUTED_ENV):
        raise ConfigError(
            "`accelerate launch --cpu` with --num_processes > 1 or --num_machines > 1 started this process alone, "
            "without torch.distributed (accelerate hands such CPU jobs to mpirun: --mpirun_hostfile), so every "
            "copy would do all the work. For several CPU processes use `accelerate launch --multi_gpu "
            "--num_processes N ...`: torchrun starts them and, with no GPU visible, they join a gloo group on "
            "the CPU (docs/scale.md)"
        )


_STATE: Any = None


def processes():
    """This process's ``accelerate.PartialState`` (or a one-process stand-in when not launched).

    Created once per process: CPU when no CUDA device is visible (or ``ACCELERATE_USE_CPU`` is set), so
    that CPU workers started by torchrun form a gloo group instead of running alone. Installs the
    ``SIGTERM`` handler of :class:`Terminated` in distributed runs.
    """
    global _STATE
    if _STATE is not None:
        return _STATE
    check_launch()
    if not launched():
        _STATE = _OneProcess()
        return _STATE
    import torch

    from pecmae_hub.extras import require

    accelerate = require("accelerate", "running under accelerate launch")
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    _STATE = accelerate.PartialState(cpu=cpu)
    if _STATE.num_processes > 1:
        signal.signal(signal.SIGTERM, _on_sigterm)
    return _STATE


def reset() -> None:
    """Forget the state (tests that switch between one and several processes in one interpreter)."""
    global _STATE
    _STATE = None


def leave(finished: bool) -> None:
    """End this process's part in a distributed run (a no-op otherwise).

    When its command finished, wait for the others first: the launcher stops every process as soon as one
    exits with a non-zero status (3: some inputs failed), so no process leaves before the main one has
    reported; a ``SIGTERM`` after that is no failure any more. Then tear the process group down (gloo
    aborts the interpreter's exit otherwise).
    """
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        with contextlib.suppress(Exception):  # a process that failed meanwhile: nothing left to wait for
            dist.barrier()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    dist.destroy_process_group()


def _on_sigterm(signum, frame) -> None:
    raise Terminated(
        f"{rank_label()}: stopped by the launcher (SIGTERM), usually because another process of this run "
        f"failed; the launcher's report names it. {_RESUME[0].upper()}{_RESUME[1:]}."
    )


def rank_label() -> str:
    """``"rank 1 of 4"`` (``"rank 0 of 1"`` in a plain run)."""
    state = processes()
    return f"rank {state.process_index} of {state.num_processes}"


def distributed() -> bool:
    """True when this run has more than one process."""
    return processes().num_processes > 1


def check_seconds() -> float:
    """The check-in interval of :class:`Guard` (``PECMAE_CHECK_SECONDS``, default 10 s)."""
    text = os.environ.get(CHECK_SECONDS_ENV, "")
    try:
        value = float(text) if text else DEFAULT_CHECK_SECONDS
    except ValueError:
        raise ConfigError(f"{CHECK_SECONDS_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"{CHECK_SECONDS_ENV} must be positive, got {text!r}")
    return value


def shard(items: Sequence) -> list:
    """This process's contiguous share of ``items`` (``PartialState.split_between_processes``: rank order is
    input order, sizes differ by at most one)."""
    with processes().split_between_processes(list(items)) as part:
        return list(part)


class Guard:
    """A section of work done by every process; any failure stops them all, naming the rank.

    ::

        with Guard("classify") as guard:
            todo = guard.exchange(todo if main else None)[0]  # rank 0's value, on every rank
            for item in shard(todo):
                ...
                guard.tick()                 # a check-in when check_seconds have passed
            totals = guard.finish(my_count)  # waits for every rank; returns every rank's value

    Exceptions leaving the block are shown to the others at their next check-in (they raise
    :class:`ProcessGroupError` naming this rank); the failing rank re-raises its own error. One process:
    every call is a no-op that returns ``[value]``.
    """

    def __init__(
        self,
        what: str,
        interval: float | None = None,
        send: Callable[[], Any] | None = None,
        receive: Callable[[list], None] | None = None,
    ):
        self.what = what
        self.send, self.receive = send, receive  # a stream passed along with every check-in (e.g. rows)
        self.state = processes()
        self.active = self.state.num_processes > 1
        self.interval = check_seconds() if interval is None else interval
        self._last = time.monotonic()
        self._round = 0
        self._finished = False

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.active or exc is None or isinstance(exc, ProcessGroupError) or not isinstance(exc, Exception):
            return  # nothing to tell, already agreed, or interrupted (the others learn it from the launcher)
        with contextlib.suppress(ProcessGroupError):  # the others may be gone already; our own error says more
            self._check(error=f"{type(exc).__name__}: {exc}", done=True)

    def tick(self) -> None:
        """Check in with the others when ``interval`` seconds have passed since the last check-in."""
        if self.active and time.monotonic() - self._last >= self.interval:
            self._check()

    def exchange(self, value: Any = None) -> list:
        """Every rank's ``value`` (rank order), after a check-in: a collective every rank must call."""
        return [v for _, v in self._check(value=value)] if self.active else [value]

    def finish(self, value: Any = None) -> list:
        """Wait until every rank has finished its share (checking in meanwhile); every rank's ``value``."""
        if not self.active:
            return [value]
        while True:
            statuses = self._check(value=value, done=True)
            if all(done for done, _ in statuses):
                self._finished = True
                return [v for _, v in statuses]

    def _check(self, value: Any = None, error: str | None = None, done: bool = False) -> list[tuple[bool, Any]]:
        from accelerate.utils import gather_object

        self._round += 1
        rank, n = self.state.process_index, self.state.num_processes
        _mark(rank, self._round)
        try:
            sent = self.send() if self.send is not None else None
            statuses = gather_object([(rank, error, done, value, sent)])
        except Exception as exc:  # a rank is gone: the collective cannot complete
            raise ProcessGroupError(
                f"{self.what}: lost contact with {_missing_ranks(self._round, n, rank)} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); {_RESUME}"
            ) from None
        finally:
            self._last = time.monotonic()
        failed = [(r, e) for r, e, _, _, _ in statuses if e]
        if failed:
            r, e = failed[0]
            raise ProcessGroupError(f"{self.what}: rank {r} of {n} failed: {e}; {_RESUME}")
        if self.receive is not None:
            self.receive([s for _, _, _, _, s in statuses])
        return [(d, v) for _, _, d, v, _ in statuses]


def _store():
    """The process group's key-value store (where the check-in rounds are marked), or None."""
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:
        return None


def _mark(rank: int, round_: int) -> None:
    store = _store()
    if store is not None:
        with contextlib.suppress(Exception):
            store.set(f"pecmae/check-in/{rank}", str(round_))


def _missing_ranks(round_: int, n: int, me: int) -> str:
    """The ranks that did not reach check-in ``round_`` (read from the store), as words."""
    store = _store()
    if store is None:
        return "another process"
    late = []
    try:
        import datetime

        store.set_timeout(datetime.timedelta(seconds=5))
        for r in range(n):
            key = f"pecmae/check-in/{r}"
            seen = int(store.get(key)) if r != me and store.check([key]) else (round_ if r == me else 0)
            if seen < round_:
                late.append(r)
    except Exception:  # the store lived with the main process: it is the one that is gone
        return "rank 0 (the main process; its store does not answer)"
    if not late:
        return "another process"
    return f"rank{'s' if len(late) > 1 else ''} {', '.join(map(str, late))} of {n} (missed check-in {round_})"


def wait_for_everyone(what: str) -> None:
    """``PartialState.wait_for_everyone()``; a process lost meanwhile gives :class:`ProcessGroupError`."""
    try:
        processes().wait_for_everyone()
    except RuntimeError as exc:
        raise lost_contact(what, exc) from exc


_LOST = ("connection closed", "connection reset", "broken pipe", "gloo", "nccl", "timed out", "timeout")


def lost_contact(what: str, exc: BaseException) -> BaseException:
    """The error to raise for ``exc``, caught around collectives of several processes (e.g. training steps):
    a :class:`ProcessGroupError` when it is a failed collective of a distributed run, else ``exc`` itself."""
    import torch.distributed as dist

    text = " ".join(str(exc).split())
    dist_error = getattr(dist, "DistError", ())
    if not distributed() or not (isinstance(exc, dist_error) or any(w in text.lower() for w in _LOST)):
        return exc
    return ProcessGroupError(
        f"{what}: lost contact with another process of the run ({type(exc).__name__}: {text[:300]})"
    )
