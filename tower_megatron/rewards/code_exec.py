"""``code``: the response's Python code passes the given unit tests, run in the sandbox.

Spec: ``{"type": "code", "tests": ["assert add(1, 2) == 3", ...], "partial": false,
"timeout_s": 2, "memory_mb": 256, "setup": "import math"}``; ``tests`` may also be one string
(one test program). The code is the last fenced block of the response tagged python/py/python3 or
untagged, else the whole response.

In the box (:mod:`.sandbox`) a runner executes ``setup``, then the code, then each test, each in
the same namespace, and prints ``<nonce> <passed> <total>`` last. The nonce comes through stdin,
which the runner closes before running the code, so a program that exits early with status 0 (or
prints a fake tally) without the nonce scores 0, and so does one that leaves a process running
in the box after the tests (the runner counts them in the box's own /proc). value = passed / total with ``partial``, else 1
only when every test passed. A timeout, a crash, a resource limit or a missing tally scores 0.

Without a working sandbox the reward refuses to run (:class:`SandboxUnavailableError`), unless the job
opts out with :func:`configure` ``(allow_unsandboxed=True)`` (``rewards.code.allow_unsandboxed``
in a recipe): then the code runs as a plain subprocess with the same limits and NO isolation,
which is only safe for code you trust.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from tower_megatron.rewards.registry import NUMBER, REWARDS, Reward, RewardResult
from tower_megatron.rewards.sandbox import Sandbox, SandboxLimits, SandboxUnavailableError, limits_from, probe

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3"}

_RUNNER = """\
import json, os, sys, traceback
def _run():
    nonce = sys.stdin.readline().strip()
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)
    with open(os.path.join(os.path.dirname(__file__), "program.json"), encoding="utf-8") as f:
        program = json.load(f)
    namespace = {"__name__": "solution"}
    passed = 0
    for index, (label, source) in enumerate(program["steps"]):
        try:
            exec(compile(source, label, "exec"), namespace)
            passed += index >= program["first_test"]
        except BaseException:
            traceback.print_exc()
            if index < program["first_test"]:
                break
    sys.stdout.flush()
    # Processes still alive in the box's PID namespace (1 is bwrap's init, we are the other).
    leftover = 0
    if program["check_leftovers"]:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            leftover += int(pid) not in (1, os.getpid()) and state != "Z"
    os.write(1, ("\\n%s %d %d %d\\n" % (nonce, passed, program["tests"], leftover)).encode())
_run()
"""


@dataclass
class CodeSettings:
    """Job-level settings, not per-record ones: data must not be able to turn the sandbox off."""

    limits: SandboxLimits = SandboxLimits(wall_time_s=5.0, cpu_time_s=5, memory_mb=512)
    allow_unsandboxed: bool = False


_SETTINGS = CodeSettings()


def configure(limits: SandboxLimits | None = None, allow_unsandboxed: bool = False) -> None:
    """Sets this process's sandbox limits (the most a spec may ask for) and the unsafe opt-out."""
    global _SETTINGS
    _SETTINGS = CodeSettings(limits or SandboxLimits(), allow_unsandboxed)


def extract_code(response: str) -> str:
    blocks = [body for tag, body in _FENCE.findall(response) if tag.lower() in _PYTHON_TAGS]
    return blocks[-1] if blocks else response


def run_tests(code: str, tests: list[str], setup: str = "", limits: SandboxLimits | None = None,
              unsafe: bool = False) -> tuple[int, int, dict]:
    """Runs ``setup``, ``code`` and each test in a sandbox; returns (passed, total, details)."""
    steps = ([["setup", setup]] if setup else []) + [["solution", code]]
    first_test = len(steps)
    steps += [[f"test_{i}", test] for i, test in enumerate(tests)]
    # Outside a box /proc is the host's: leftover processes can only be counted inside one.
    program = {"steps": steps, "first_test": first_test, "tests": len(tests), "check_leftovers": not unsafe}
    nonce = secrets.token_hex(16)
    sandbox = Sandbox(limits or _SETTINGS.limits, unsafe=unsafe)
    result = sandbox.run({"runner.py": _RUNNER, "program.json": json.dumps(program)}, "runner.py",
                         stdin=nonce + "\n")
    passed = leftover = 0
    tally = [line.split() for line in result.stdout.splitlines() if line.startswith(nonce + " ")]
    if tally:
        leftover = int(tally[-1][3])
    if tally and not result.timed_out and not result.output_limited and not leftover:
        passed = int(tally[-1][1])
    details = {"returncode": result.returncode, "timed_out": result.timed_out,
               "output_limited": result.output_limited, "tally": bool(tally), "leftover_processes": leftover,
               "stderr_tail": result.stderr[-500:], "wall_s": round(result.wall_s, 3)}
    return passed, len(tests), details


def code_reward(response: str, spec: dict, lang: str | None = None) -> RewardResult:
    unsafe = False
    problem = probe()
    if problem is not None:
        if not _SETTINGS.allow_unsandboxed:
            raise SandboxUnavailableError(
                f"code reward refuses to run untrusted code without a sandbox: {problem}. "
                "Set rewards.code.allow_unsandboxed=true only for trusted code (UNSAFE)."
            )
        unsafe = True
    tests = spec["tests"] if isinstance(spec["tests"], list) else [spec["tests"]]
    limits = limits_from(spec, _SETTINGS.limits)
    passed, total, details = run_tests(extract_code(response), tests, spec.get("setup", ""), limits, unsafe)
    value = passed / total if spec.get("partial", False) else float(passed == total)
    details.update(passed=passed, total=total, sandboxed=not unsafe)
    return RewardResult(value, "code", details)


def _check(spec: dict, where: str) -> str | None:
    tests = spec["tests"]
    if isinstance(tests, list):
        if not tests:
            return f"{where}.tests: must hold at least one test"
        for i, test in enumerate(tests):
            if not isinstance(test, str) or not test.strip():
                return f"{where}.tests[{i}]: expected a non-empty string of Python, got {test!r}"
    elif not tests.strip():
        return f"{where}.tests: must not be empty"
    if spec.get("language", "python") != "python":
        return f"{where}.language: only 'python' is supported, got {spec['language']!r}"
    for name in ("timeout_s", "memory_mb"):
        if name in spec and spec[name] <= 0:
            return f"{where}.{name}: must be > 0, got {spec[name]!r}"
    return None


REWARDS.register("code")(
    Reward(
        compute=code_reward,
        fields={"tests": ((list, str), True), "setup": ((str,), False), "partial": ((bool,), False),
                "timeout_s": (NUMBER, False), "memory_mb": ((int,), False), "language": ((str,), False)},
        doc="Python code from the response passes the unit tests in a bubblewrap sandbox",
        check=_check,
        warmup=probe,
    )
)
