"""Interruptions of a run: a signal stops every process at the same step once ``last.ckpt`` of that
step is written; SLURM's pre-emption warning requeues the job; a dead DDP worker is named in one
line.

Signals. ``SIGTERM`` (schedulers, ``kill``), ``SIGINT`` (Ctrl-C) and ``SIGUSR1`` (SLURM's warning,
``sbatch --signal=USR1@90``) only set a flag (:class:`StopOnSignal`). After each training batch the
processes agree on it (one all-reduce of the flag: every rank stops at the same batch, whichever
rank got the signal), finish that batch's evaluation or epoch end if one follows (the exact save
points, see :mod:`.checkpointing`), write ``last.ckpt`` together (rank 0 writes the file) and stop;
the process exits with ``128 + signal`` and one line with the command that continues the run.

Why not Lightning's own SIGTERM handling: its handler runs collectives from inside the signal
handler and only rank 0's flag is broadcast, so a rank can raise ``SIGTERMException`` one batch
before the others (Lightning issue #20806): measured on Lightning 2.6.6, ``--devices 2`` and a
SIGTERM to rank 0 hung both processes until killed. Its SLURM handler (``SLURMEnvironment(
auto_requeue=True)``) saves a checkpoint from inside the signal handler, i.e. at any point of a step
(between the optimizer step and the loop counters), which a resume cannot continue exactly. So the
toolkit passes Lightning's ``SLURMEnvironment`` with ``auto_requeue=False`` and requeues itself,
after its own checkpoint, with Lightning's command (``scontrol requeue JOB``).

Dead workers. Lightning's launcher watches the worker processes it starts and SIGKILLs rank 0 within
5 s of a worker's death, often before rank 0 can say anything. :class:`WorkerWatch` takes that
over: rank 0 reports which rank died and how (signal or exit code) and how to continue; if rank 0
is stuck in a collective that never returns (NCCL waits for its timeout), the watch prints that line
itself after ``GRACE_S`` and ends every process, as Lightning's watcher did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .checkpointing import validation_follows
from .errors import ToolkitError

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.utilities.types import STEP_OUTPUT

    from .checkpointing import LastCheckpoint

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
REQUEUE_SIGNAL = signal.SIGUSR1
GRACE_S = 15.0  # a dead worker: how long rank 0 may take to notice it by itself


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(returncode: int) -> str:
    """``Popen.returncode`` in words: ``killed by SIGKILL`` / ``exit code 1``."""
    return f"killed by {signal_name(-returncode)}" if returncode < 0 else f"exit code {returncode}"


class StopRequested(SIGTERMException):
    """Raised inside the fit loop on every rank once the checkpoint of ``step`` is written."""

    def __init__(self, signum: int, step: int, requeued: str | None = None):
        super().__init__(128 + signum)
        self.signum, self.step, self.requeued = signum, step, requeued


class RunInterrupted(ToolkitError):
    """A run stopped by a signal after saving its checkpoint: exit ``128 + signal``, one line."""

    prefix = "interrupted"

    def __init__(self, what: str, how: str, signum: int):
        super().__init__(f"{what}; {how}")
        self.what, self.how = what, how
        self.signum = signum
        self.exit_code = 128 + signum


# ---------------------------------------------------------------------------------------------
# SLURM


def on_slurm() -> bool:
    """SLURM started this process (Lightning's test: ``srun`` / a batch job, not an interactive one)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def slurm_environment() -> SLURMEnvironment | None:
    """Lightning's ``SLURMEnvironment`` without its in-handler requeue, when SLURM runs this
    process (else None: Lightning picks its environment itself)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment(auto_requeue=False, requeue_signal=REQUEUE_SIGNAL) if on_slurm() else None


def slurm_job_id() -> str | None:
    """The job to requeue (an array task as ``ARRAYJOB_TASK``), as Lightning's handler finds it."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job() -> str:
    """``scontrol requeue JOB`` (what Lightning's auto-requeue runs); returns what happened, in words."""
    job = slurm_job_id()
    if not job or not all(c.isdigit() or c == "_" for c in job):
        return "not requeued (no SLURM job id)"
    try:
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"requeue of SLURM job {job} failed ({type(e).__name__})"
    if r.returncode != 0:
        return f"requeue of SLURM job {job} failed (scontrol exit code {r.returncode})"
    return f"SLURM job {job} requeued: it resumes by itself"


def slurm_restarted() -> bool:
    """A job that SLURM requeued (``SLURM_RESTART_COUNT`` >= 1) runs its script again: the run it
    started continues (``--resume``) instead of being refused as an existing directory."""
    return os.environ.get("SLURM_RESTART_COUNT", "0").strip() not in ("", "0")


# ---------------------------------------------------------------------------------------------
# the stop


class StopOnSignal(Checkpoint):
    """Turns SIGTERM / SIGINT / SIGUSR1 into a stop at the next exact save point of all ranks.

    A ``Checkpoint`` subclass so that Lightning calls it after the ``ModelCheckpoint`` callbacks
    (``best.ckpt`` and ``last.ckpt`` of an evaluation are written before it stops the run).
    :meth:`bind` gives it the epoch :class:`~.checkpointing.LastCheckpoint` (which writes the
    checkpoint) and every ``last.ckpt`` writer (one of them may have written this step already).
    ``requeue`` is called on rank 0 after the save when the SLURM requeue signal stopped the run;
    ``dead_line(rank, returncode)`` is the line that reports a dead worker (:class:`WorkerWatch`)."""

    def __init__(self, requeue: Callable[[], str] | None = None, dead_line: Callable[[int, int], str] | None = None):
        super().__init__()
        self.requeue = requeue
        self.dead_line = dead_line
        self.last: LastCheckpoint | None = None
        self.writers: list = []
        self.received = 0  # the first signal this process got
        self.agreed = 0  # the signal all ranks stop for
        self.stopping = False  # the workers may now exit
        self.watch: WorkerWatch | None = None
        self._parent = os.getppid()
        self._pending = False  # stop at the end of the evaluation that follows this batch

    def bind(self, last: LastCheckpoint, writers: list) -> None:
        self.last, self.writers = last, list(writers)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if not self.received:
            self.received = int(signum)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._parent = os.getppid()
        if stage == "fit" and self.watch is None and self.dead_line is not None:
            self.watch = WorkerWatch.start_for(trainer, self, self.dead_line)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning registered its own handlers (which its teardown restores)
        if threading.current_thread() is not threading.main_thread():
            return
        for s in STOP_SIGNALS:
            signal.signal(s, self._handler)
        connector: Any = getattr(trainer, "_signal_connector", None)
        if getattr(connector, "received_sigterm", False):  # arrived while the run was being set up
            connector.received_sigterm = False
            self._handler(signal.SIGTERM, None)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning's teardown restores the handlers of before the fit; should it not have, the defaults
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                if signal.getsignal(s) == self._handler:
                    signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)

    def finish(self) -> None:
        if self.watch is not None:
            self.watch.finish()

    def orphaned(self) -> bool:
        """The process that started this one (rank 0, for Lightning's workers) is gone."""
        return os.getppid() != self._parent

    def _agree(self, trainer: pl.Trainer) -> int:
        if trainer.world_size <= 1:
            return self.received
        flag = torch.tensor([float(self.received)], device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        if self._pending:  # the evaluation Lightning announced did not run (never seen): stop now
            self._stop(trainer)
        if self.agreed:
            return
        self.agreed = self._agree(trainer)
        if not self.agreed:
            return
        if validation_follows(trainer):
            self._pending = True  # a save now would skip that evaluation on resume
        else:
            self._stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending and not trainer.sanity_checking:
            self._stop(trainer)

    def _stop(self, trainer: pl.Trainer) -> None:
        self._pending = False
        self.stopping = True
        if not any(w.saved_step == trainer.global_step for w in self.writers):
            assert self.last is not None  # (bound before the fit)
            self.last.save_now(trainer)  # every rank: the save gathers state; rank 0 writes
        requeued = None
        if self.requeue is not None and self.agreed == REQUEUE_SIGNAL and trainer.is_global_zero:
            requeued = self.requeue()
        raise StopRequested(self.agreed, trainer.global_step, requeued)


# ---------------------------------------------------------------------------------------------
# dead workers


def _silence_lightning_observer() -> None:
    """End Lightning's child-process observer (it would SIGKILL rank 0 within 5 s of a worker's
    death): with no processes to watch it finishes at its next check."""
    for t in threading.enumerate():
        if t.name == "child-process-observer" and hasattr(t, "_child_processes"):
            t._child_processes = []


class WorkerWatch(threading.Thread):
    """Rank 0's watch over the worker processes started by Lightning's launcher (local ranks
    ``1..N-1`` of this node, global ranks ``first_rank + i``)."""

    def __init__(self, procs: list, first_rank: int, stop: StopOnSignal, line: Callable[[int, int], str]):
        super().__init__(daemon=True, name="momentumrnn-worker-watch")
        self.procs = list(procs)
        self.first_rank = first_rank
        self.stop = stop
        self.line = line
        self.dead: tuple[int, int] | None = None  # (rank, returncode) of the first death
        self.reported = threading.Event()  # the line is out (by the main thread or by this one)
        self._lock = threading.Lock()
        self._done = threading.Event()

    @classmethod
    def start_for(
        cls,
        trainer: pl.Trainer,
        stop: StopOnSignal,
        line: Callable[[int, int], str],
    ) -> WorkerWatch | None:
        procs = list(getattr(trainer.strategy.launcher, "procs", None) or [])
        if not procs or not trainer.is_global_zero:
            return None
        _silence_lightning_observer()
        watch = cls(procs, trainer.global_rank + 1, stop, line)
        watch.start()
        return watch

    def finish(self) -> None:
        self._done.set()

    def death(self) -> tuple[int, int] | None:
        """(rank, returncode) of a worker that died (waits briefly for the exit to be visible)."""
        for _ in range(20):
            self._poll()
            if self.dead is not None:
                break
            time.sleep(0.05)
        return self.dead

    def claim_report(self) -> bool:
        """True once: whoever gets it prints the line."""
        with self._lock:
            if self.reported.is_set():
                return False
            self.reported.set()
            return True

    def _poll(self) -> None:
        for i, p in enumerate(self.procs):
            rc = p.poll()
            if rc not in (None, 0) and self.dead is None and not self.stop.stopping:
                self.dead = (self.first_rank + i, rc)

    def run(self) -> None:
        since = None
        while not self._done.wait(0.2):
            self._poll()
            if self.dead is not None and since is None:
                since = time.monotonic()
            if all(p.returncode == 0 for p in self.procs):
                return
            if since is not None and time.monotonic() - since > GRACE_S and self.claim_report():
                assert self.dead is not None  # (since is set with it)
                # rank 0 is stuck (e.g. NCCL waiting for the dead peer): report and end everything
                print(f"error: {self.line(*self.dead)}", file=sys.stderr, flush=True)
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                os._exit(1)
