"""Emulator time: the clock of timed mode, how long a timed sync's steps take, and the background scheduler.

In timed mode (`PluggyEmulator(timed=True)` or `sync_timing=SyncTiming(...)`) the emulator runs on its own
clock: it starts at the given `clock` (default the wall clock) and advances `1 / time_scale` emulator seconds
per wall second, so with `time_scale=0.002` a three-minute Pluggy sync takes 0.36 s. Every emulator duration
(execution steps, the MFA and user-action deadlines, the device-authorization delay, late rows, the
rate-limit minute, webhook retries) is measured on it, and resource timestamps and dated rules (the legacy
/transactions sunset) read it. API key lifetimes stay on real time. Durations here are emulator seconds; the
pace of a sync comes from pluggy-api.md section 9 ("a sandbox sync takes about 2-4 min, and transactions can
lag briefly after UPDATED") and section 11 (the step order).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncTiming:
    """A timed sync's steps (emulator seconds), its waits for the user, and its late rows.

    The defaults make a sandbox sync last about three minutes (175 s for a new item): CREATING `creating`,
    CREATED `created`, LOGIN_IN_PROGRESS `login`, ACCOUNTS_IN_PROGRESS `accounts`, TRANSACTIONS_IN_PROGRESS
    `transactions`, PAYMENT_DATA_IN_PROGRESS `payment_data`, CREDITCARDS_IN_PROGRESS `credit_cards`, MERGING
    `merging`, then UPDATED. An update (PATCH, a control sync) starts at CREATED.

    Waits after the login: WAITING_USER_INPUT (the MFA 2-step connector) until the MFA is sent or
    `mfa_timeout` passes, then LOGIN_MFA_IN_PROGRESS `login_mfa`; WAITING_USER_ACTION (the app authorization
    connector) until the account holder acts or `user_action_timeout` passes, then LOGIN_IN_PROGRESS
    `login_mfa` again. A login that ends USER_AUTHORIZATION_PENDING (the device-authorization username) is
    followed `authorization_delay` later by a sync Pluggy runs by itself (seed 001: "a delay of 30'").

    `late_fraction` of the transactions a sync creates become visible only after the item is UPDATED, each
    account's late rows together, `late_delay` (min, max) seconds after it, with their own
    transactions/created; they carry a `createdAt` from the first half of their account's collection, so
    earlier than rows already visible.
    """

    creating: float = 2.0
    created: float = 3.0
    login: float = 20.0
    login_mfa: float = 15.0
    accounts: float = 20.0
    transactions: float = 80.0
    payment_data: float = 10.0
    credit_cards: float = 35.0
    merging: float = 5.0
    mfa_timeout: float = 300.0
    user_action_timeout: float = 300.0
    authorization_delay: float = 1800.0
    late_fraction: float = 0.1
    late_delay: tuple[float, float] = (15.0, 90.0)

    def __post_init__(self) -> None:
        steps = (
            self.creating,
            self.created,
            self.login,
            self.login_mfa,
            self.accounts,
            self.transactions,
            self.payment_data,
            self.credit_cards,
            self.merging,
        )
        if min(steps) < 0:
            raise ValueError("step durations must be >= 0 seconds")
        if min(self.mfa_timeout, self.user_action_timeout) <= 0:
            raise ValueError("mfa_timeout and user_action_timeout must be > 0 seconds")
        if self.authorization_delay < 0:
            raise ValueError("authorization_delay must be >= 0 seconds")
        if not 0.0 <= self.late_fraction <= 1.0:
            raise ValueError("late_fraction must be between 0 and 1")
        low, high = self.late_delay
        if low < 0 or high < low:
            raise ValueError("late_delay must be (min, max) with 0 <= min <= max")

    def total(self, *, first: bool = True) -> float:
        """Seconds from the request to UPDATED for a sync without MFA."""
        steps = self.created + self.login + self.accounts + self.transactions + self.payment_data
        return steps + self.credit_cards + self.merging + (self.creating if first else 0.0)


def scaled_clock(base: Callable[[], float] | None, time_scale: float) -> Callable[[], float]:
    """Seconds since the epoch that start at `base()` (default now) and run 1 / time_scale times faster."""
    if time_scale <= 0:
        raise ValueError("timed mode needs time_scale > 0 (emulator seconds -> wall seconds)")
    start = base() if base is not None else time.time()
    anchor = time.monotonic()

    def now() -> float:
        return start + (time.monotonic() - anchor) / time_scale

    return now


@dataclass(eq=False)
class ScheduledTask:
    """A handle on scheduled work: `cancel` it, or see whether it ran (`done`)."""

    due_ms: int
    run: Callable[[], None] = field(repr=False)
    cancelled: bool = False
    done: bool = False


class Scheduler:
    """Background work at emulator times: one thread runs each task when the emulator clock reaches it.

    Tasks due at the same millisecond run in the order they were scheduled. `wait_idle` returns once no
    task is waiting or running (tasks may schedule more). Stopping discards what has not run.
    """

    def __init__(self, now_ms: Callable[[], int], time_scale: float) -> None:
        self._now_ms = now_ms
        self._scale = time_scale
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, ScheduledTask]] = []
        self._seq = itertools.count()
        self._running = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pluggy-emulator-timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def at(self, due_ms: int, run: Callable[[], None]) -> ScheduledTask:
        task = ScheduledTask(due_ms, run)
        with self._cond:
            if self._stopping:
                task.cancelled = True
                return task
            heapq.heappush(self._heap, (due_ms, next(self._seq), task))
            self._cond.notify_all()
        return task

    def cancel(self, task: ScheduledTask) -> None:
        """It will not run (no effect once it ran or while it runs)."""
        with self._cond:
            if task.cancelled or task.done:
                return
            task.cancelled = True
            before = len(self._heap)
            self._heap = [entry for entry in self._heap if entry[2] is not task]
            if len(self._heap) != before:
                heapq.heapify(self._heap)
                self._cond.notify_all()

    def wake(self) -> None:
        """Look at the clock again now (it jumped, paused or resumed), rather than when the wait ends."""
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._running

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and self._running == 0, max(0.0, timeout))

    def _next(self) -> ScheduledTask | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._heap:
                    wait_ms = self._heap[0][0] - self._now_ms()
                    if wait_ms <= 0:
                        task = heapq.heappop(self._heap)[2]
                        self._running += 1
                        return task
                    self._cond.wait(wait_ms / 1000 * self._scale)
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while (task := self._next()) is not None:
            try:
                task.run()
            except Exception:
                logger.exception("emulator background task failed")
            finally:
                with self._cond:
                    task.done = True
                    self._running -= 1
                    self._cond.notify_all()
