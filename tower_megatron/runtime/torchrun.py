"""``torchrun`` with the exit status a cluster scheduler needs on pre-emption.

Use it exactly like torchrun (same arguments)::

    python -m tower_megatron.runtime.torchrun --nproc-per-node=8 -m tower_megatron train CONFIG

What plain torchrun (torch 2.x elastic agent) does with a signal, and what this changes:

* On SIGTERM/SIGINT/SIGHUP/SIGQUIT the agent raises ``SignalException``, forwards the same
  signal to every worker's process group (``os.killpg``; each worker is a session leader), waits
  ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds (default 30), SIGKILLs what is left, then re-raises:
  torchrun exits non-zero even when every worker saved its checkpoint and exited 0, so Slurm
  marks a clean pre-emption as failed. Here the exit code is 0 when every worker exited 0, else
  128 + the signal number (the shell convention for "killed by").
* SIGUSR1 (Slurm's ``--signal=USR1@120`` pre-emption warning) is not in torchrun's list: its
  default action kills the agent and orphans the workers. Here it is added to
  ``--signals-to-handle`` (``PET_SIGNALS_TO_HANDLE``), so it is forwarded like SIGTERM.
* The grace period defaults to 120 s instead of 30 s (a large model's save takes longer); set
  ``--shutdown-timeout`` or ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` to change it. Workers still running after it are killed.

The workers' side (stop at the next step boundary, save, exit 0) is the trainer's
``PreemptionCallback``. The worker exit codes are read from torch's ``SubprocessContext`` after
its shutdown (a private detail of ``torch.distributed.elastic``, checked when this is imported).
"""

from __future__ import annotations

import os
import signal
import sys

HANDLED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
DEFAULT_GRACE_S = "120"

# Exit codes of the workers, as the elastic agent's last shutdown left them (local rank -> code).
_worker_codes: dict[int, int | None] = {}


def _record_worker_exit_codes() -> None:
    """Wraps ``SubprocessContext._close`` so the workers' exit codes survive the agent."""
    from torch.distributed.elastic.multiprocessing.api import SubprocessContext

    if getattr(SubprocessContext, "_tower_records_codes", False):
        return
    original = SubprocessContext._close

    def close_and_record(self, death_sig, timeout=30):
        original(self, death_sig, timeout)
        for local_rank, handler in self.subprocess_handlers.items():
            _worker_codes[local_rank] = handler.proc.poll()

    SubprocessContext._close = close_and_record
    SubprocessContext._tower_records_codes = True


def exit_code_after_signal(sigval: int, codes: dict[int, int | None]) -> int:
    """0 when every worker finished cleanly after the signal, else ``128 + sigval``."""
    if codes and all(code == 0 for code in codes.values()):
        return 0
    return 128 + int(sigval)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun_main

    # torchrun's --signals-to-handle defaults from PET_SIGNALS_TO_HANDLE (then exports it as
    # TORCHELASTIC_SIGNALS_TO_HANDLE); an explicit flag or variable still wins.
    os.environ.setdefault("PET_SIGNALS_TO_HANDLE", HANDLED_SIGNALS)
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", DEFAULT_GRACE_S)
    _record_worker_exit_codes()
    try:
        torchrun_main(argv)
    except SignalException as exc:
        code = exit_code_after_signal(exc.sigval, _worker_codes)
        name = signal.Signals(exc.sigval).name
        codes = ", ".join(f"rank {r}: {c}" for r, c in sorted(_worker_codes.items()))
        print(f"torchrun: {name} forwarded to the workers; their exit codes: {codes or 'none'}; "
              f"exiting {code}", file=sys.stderr, flush=True)  # fmt: skip
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
