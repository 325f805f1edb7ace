"""Stop and save requests from outside: SIGTERM/SIGINT, and a SAVE_NOW file in the run folder.

Preemptible boxes send SIGTERM, then SIGKILL after a grace period (compose: stop_grace_period
120 s). The handler only records the request; the training loop acts on it at the next step end
(llava.train.step_control), so no step is cut in half. A watchdog bounds the whole stop: past
LLAVA_KIT_STOP_GRACE_S the process exits by itself. Saves are atomic, so whatever the watchdog
interrupts, the last complete checkpoint stays usable.

torchrun sends SIGTERM to each worker's whole process group, DataLoader worker processes included.
Torch's worker handler dies on a SIGTERM that its parent did not send, and the trainer then fails
with "DataLoader worker ... killed" instead of saving. So processes forked while a stage trains get
a process group of their own: group-wide signals (torchrun, a terminal's Ctrl-C) reach the trainer
only, which stops its workers itself; its own terminate() still reaches them, and after a SIGKILL of
the trainer they exit by themselves (torch's worker watchdog). A signal sent to every process of a
cgroup (systemd's default KillMode, Slurm's scancel) still reaches the workers: not handled here.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from llava.errors import KitError

log = logging.getLogger(__name__)

GRACE_ENV = "LLAVA_KIT_STOP_GRACE_S"
DEFAULT_GRACE_S = 110.0
SAVE_NOW_FILE = "SAVE_NOW"
HANDLED = (signal.SIGTERM, signal.SIGINT)

_stage_active = False  # true while a StopRequests has its handlers installed (copied into forked children)


def _own_process_group_in_child() -> None:
    """Runs in every child forked by this process (os.register_at_fork); see the module docstring.

    Not a blocked or ignored SIGTERM: the trainer's own terminate() of a stuck worker (and
    multiprocessing's at exit) must still work, and torch re-installs its handler in the worker anyway.
    """
    if _stage_active:
        os.setpgid(0, 0)


os.register_at_fork(after_in_child=_own_process_group_in_child)


class TrainingStopped(KitError):
    """The stage stopped on request after saving resumable state; the same command resumes it."""


def stop_grace_seconds() -> float:
    """Seconds between a stop signal and the process exiting by itself (env LLAVA_KIT_STOP_GRACE_S)."""
    raw = os.environ.get(GRACE_ENV, "").strip()
    if not raw:
        return DEFAULT_GRACE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise KitError(f"{GRACE_ENV}={raw!r} must be a positive number of seconds (default {DEFAULT_GRACE_S:g}; "
                       "keep it below the container's stop_grace_period)")
    return value


def _say(text: str) -> None:
    """Straight to fd 2: print() from a signal handler can hit a reentrant-write error on stderr."""
    os.write(2, f"[llava-kit] {text}\n".encode())


class StopRequests:
    """Context manager that installs the SIGTERM/SIGINT handlers for one stage and restores the old ones.

    `last_checkpoint` is kept up to date by the checkpoint writer so the watchdog's message can
    name what survives.
    """

    def __init__(self, run_dir: str | Path, grace_s: float | None = None):
        self.run_dir = Path(run_dir)
        self.grace_s = stop_grace_seconds() if grace_s is None else grace_s
        self.signal_name: str | None = None
        self.last_checkpoint: str | None = None
        self._previous: dict[int, object] = {}
        self._owner = os.getpid()
        self._watchdog: threading.Timer | None = None

    @property
    def stop_requested(self) -> bool:
        return self.signal_name is not None

    @property
    def save_now_path(self) -> Path:
        return self.run_dir / SAVE_NOW_FILE

    def save_now_requested(self) -> bool:
        return self.save_now_path.exists()

    def clear_save_now(self) -> None:
        self.save_now_path.unlink(missing_ok=True)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is not threading.main_thread():
            log.warning("training outside the main thread: SIGTERM/SIGINT will not save a checkpoint")
            return self
        global _stage_active
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        _stage_active = True
        return self

    def __exit__(self, *exc) -> bool:
        global _stage_active
        if self._previous:
            _stage_active = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._watchdog is not None:
            self._watchdog.cancel()
        return False

    @property
    def signal_number(self) -> int:
        """The requested signal's number, 0 when none: what the ranks compare at each step end."""
        return int(signal.Signals[self.signal_name]) if self.signal_name else 0

    def adopt(self, signum: int) -> None:
        """Another rank was signalled (signum 0: no rank was) (a preempted node, a single killed worker): stop here as well.

        Every rank must leave the loop at the same step and take the same exit path; a rank that
        did not see the signal itself would otherwise go on to the final (collective) save alone.
        """
        if signum and self.signal_name is None:
            self._request(signum, "received by another rank")

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._owner:  # a forked dataloader worker inherited the handler: the parent acts
            return
        if self.signal_name is not None:
            return  # torchrun forwards the signal a terminal already sent: one request is enough
        self._request(signum, "received")

    def _request(self, signum: int, how: str) -> None:
        self.signal_name = signal.Signals(signum).name
        _say(f"{self.signal_name} {how}: finishing the current step, then saving resumable state "
             f"(exiting within {GRACE_ENV}={self.grace_s:g} s)")
        self._watchdog = threading.Timer(self.grace_s, self._expire, args=(128 + signum,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _expire(self, code: int) -> None:
        survivor = f"the last complete checkpoint is {self.last_checkpoint}" if self.last_checkpoint else \
            "no complete checkpoint was written in this run"
        _say(f"could not finish the step and save within {GRACE_ENV}={self.grace_s:g} s: exiting now; {survivor}. "
             "Run the same command again to resume.")
        os._exit(code)
