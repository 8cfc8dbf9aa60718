"""A dead rank never hangs the job: every rank heartbeats through the rendezvous TCPStore and
exits when a peer's heartbeat stops.

Without it, when one rank dies (``kill -9``, the OOM killer, a crash) the others wait inside
their next collective until the process-group timeout (``run.distributed_timeout_minutes``, 30
by default; NCCL's watchdog is similar). ``torchrun`` notices a dead worker and stops the others,
but a job launched one process per rank (``srun python -m tower_megatron train``) would wait.

How: a daemon thread per rank increments the counter ``<prefix>/beat/<rank>`` about once a
second over its own connection to the store (``MASTER_ADDR:MASTER_PORT``: torchrun's agent or
rank 0) and reads every peer's counter. A peer whose counter has not moved for
``run.peer_failure_timeout_s`` (by this rank's own clock: no clock synchronisation needed), or a
store that stays unreachable that long (its host died), makes this rank print which rank failed
and leave with exit code :data:`PEER_FAILURE_EXIT` through ``os._exit`` — the main thread is
blocked in a collective and cannot be interrupted otherwise. Checkpoints stay intact: a save in
progress is in a ``.tmp_`` directory that the next start removes. A rank that finished marks
itself done, so peers do not mistake a clean exit for a failure.

Not covered: a rank that is alive but stuck (its heartbeat thread still runs); that is the
process-group timeout's job.
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time

PEER_FAILURE_EXIT = 17
BEAT_INTERVAL_S = 1.0
# Words of a collective that failed because a peer went away (gloo, NCCL, c10d); other errors are
# this rank's own and propagate at once.
COMM_FAILURE_WORDS = ("connection", "gloo", "nccl", "socket", "timed out", "broken pipe")
_starts = 0  # watchdogs started in this process: every rank starts the same number, in order


def is_comm_failure(exc: BaseException) -> bool:
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, (dist.DistError, RuntimeError)) and any(w in text for w in COMM_FAILURE_WORDS)


class PeerWatchdog:
    def __init__(self, rank: int, world_size: int, timeout_s: float, prefix: str | None = None) -> None:
        from torch.distributed import TCPStore

        self.rank, self.world_size, self.timeout_s = rank, world_size, timeout_s
        global _starts
        _starts += 1
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "run")
        self.prefix = prefix or f"tower_watchdog/{run_id}/{restart}/{_starts}"
        self._store = TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=datetime.timedelta(seconds=max(5.0, timeout_s)),
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tower-peer-watchdog", daemon=True)
        self._seen: dict[int, tuple[int, float]] = {}  # rank -> (last counter, when it moved)

    def start(self) -> PeerWatchdog:
        self._store.add(f"{self.prefix}/beat/{self.rank}", 1)
        self._thread.start()
        return self

    def stop(self) -> None:
        """This rank is done: peers stop watching it."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._store.set(f"{self.prefix}/done/{self.rank}", "1")
        except Exception:  # the store host may already be gone at the very end
            pass

    def blame_peer(self) -> None:
        """Called when a collective failed on this rank (gloo reports a peer's closed connection
        at once, without naming it): waits up to the timeout for a peer's heartbeat to stop and
        exits naming it; returns if every peer is alive (the error is this rank's own)."""
        self._stop.set()
        self._thread.join(timeout=5)
        deadline = time.monotonic() + self.timeout_s + 2 * BEAT_INTERVAL_S
        first_error = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            try:
                self._store.add(f"{self.prefix}/beat/{self.rank}", 1)  # still alive, just failing
                self._check_peers(now)
            except Exception as exc:  # the store's host died with the peer
                first_error = first_error or now
                if now - first_error > self.timeout_s:
                    self._failed(f"lost the rendezvous store (rank 0 or the launcher died?): {exc}")
            time.sleep(BEAT_INTERVAL_S)

    def _failed(self, message: str) -> None:
        print(f"rank {self.rank}: {message}; exiting (run.peer_failure_timeout_s={self.timeout_s:g})",
              file=sys.stderr, flush=True)  # fmt: skip
        os._exit(PEER_FAILURE_EXIT)

    def _check_peers(self, now: float) -> None:
        for peer in range(self.world_size):
            if peer == self.rank or self._store.check([f"{self.prefix}/done/{peer}"]):
                continue
            key = f"{self.prefix}/beat/{peer}"
            count = self._store.add(key, 0) if self._store.check([key]) else 0
            last, since = self._seen.get(peer, (-1, now))
            if count != last:
                self._seen[peer] = (count, now)
            elif now - since > self.timeout_s:
                self._failed(f"rank {peer} stopped responding (no heartbeat for {now - since:.0f}s)")

    def _run(self) -> None:
        unreachable_since: float | None = None
        while not self._stop.wait(BEAT_INTERVAL_S):
            now = time.monotonic()
            try:
                self._store.add(f"{self.prefix}/beat/{self.rank}", 1)
                self._check_peers(now)
                unreachable_since = None
            except Exception as exc:  # the store's host (torchrun's agent or rank 0) is gone
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self.timeout_s and not self._stop.is_set():
                    self._failed(f"lost the rendezvous store (rank 0 or the launcher died?): {exc}")


def start_peer_watchdog(rank: int, world_size: int, timeout_s: float) -> PeerWatchdog | None:
    """A started watchdog for a world of ≥ 2 ranks with ``timeout_s > 0``; else None."""
    if world_size < 2 or timeout_s <= 0:
        return None
    return PeerWatchdog(rank, world_size, timeout_s).start()
