"""The signals that stop a run: Ctrl-C, and what cluster schedulers send before they kill a job.

``SIGINT`` (Ctrl-C), ``SIGTERM`` (SLURM's ``scancel`` and time limit, Kubernetes, ``kill``) and
``SIGUSR1`` (SLURM's ``--signal=USR1@seconds`` warning before the time limit, commonly used to
requeue) ask the run to stop: the training process finishes the step it is in, writes a
checkpoint and exits with ``128 + the signal number``, the shell's convention (130, 143, 138),
so a job script can tell a stop from a finished run (0) or an error (1). A second Ctrl-C stops
at once, without a checkpoint.

The handlers are installed when a run starts, before anything is written. Until the run
directory is claimed (:meth:`StopRequest.defer`) a stop ends the command at once, with nothing
written; from then on it is recorded and the training loop stops at its next step with a
checkpoint (or, before its first step, leaving a directory that the same command or
``--resume`` starts again in place).

DataLoader workers ignore these signals (:func:`ignore_stop_signals`): a scheduler signals every
process of the job, and a worker that died of it would take the batch the main process is
waiting for with it; the main process shuts its workers down itself once the checkpoint is
written.
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "Interrupted", "StopRequest", "exit_code", "ignore_stop_signals"]

#: The signals that stop a run with a checkpoint.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def exit_code(signum: int) -> int:
    """The exit code of a run stopped by ``signum``: 128 + its number (130 for SIGINT).

    Example:
        >>> exit_code(signal.SIGTERM), exit_code(signal.SIGUSR1), exit_code(signal.SIGINT)
        (143, 138, 130)
    """
    return 128 + int(signum)


class Interrupted(RuntimeError):
    """A stop signal (SIGINT, SIGTERM, SIGUSR1) ended a command after its work so far was saved.

    Attributes:
        signum: The signal; the process should exit with :attr:`exit_code`.
    """

    def __init__(self, message: str, *, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


class StopRequest:
    """While entered, the stop signals set :attr:`signum` instead of ending the process.

    The training loop reads it between steps. A second SIGINT raises ``KeyboardInterrupt``.
    Handlers can only be installed from the main thread; elsewhere nothing is installed.

    Args:
        immediate: Until :meth:`defer` is called, a stop signal raises :class:`Interrupted` at
            once (for the start-up of a run, while nothing is written yet).
    """

    def __init__(self, *, immediate: bool = False) -> None:
        self.signum = 0  # the first stop signal received, 0 while none
        self.immediate = immediate
        self.entered = False  # between __enter__ and __exit__
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def defer(self) -> None:
        """From now on a stop signal is only recorded (the loop saves, then stops)."""
        self.immediate = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum
        if self.immediate:
            name = signal.Signals(signum).name
            raise Interrupted(
                f"{name} before the run started: nothing was written; run the same command "
                f"again to start it",
                signum=signum,
            )

    def __enter__(self) -> StopRequest:
        self.entered = True
        with contextlib.suppress(ValueError):  # only the main thread may install handlers
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.entered = False
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores the stop signals (its main process
    handles them and ends it)."""
    del worker_id
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
