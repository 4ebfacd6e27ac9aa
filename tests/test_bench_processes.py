"""`ganno bench` as a process: one runner per folder, Ctrl-C, SIGKILL, Ray on loopback.

These tests start real `ganno bench` processes (each in its own session, so that signals
reach only them) and watch their process trees through /proc; they kill only what they
started.
"""

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ganno_env.controllers import HAND_MADE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

GANNO = str(Path(sys.executable).parent / "ganno")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Far more work than a test waits for (the tests stop or kill the run), in short units.
LONG_RUN = ["--quick", "--seeds", "1", "--controllers", ",".join(HAND_MADE)]
SIGINT_BIT = 1 << (signal.SIGINT - 1)


def default_sigint() -> None:
    """In the child before exec: Ctrl-C as in a terminal. Python installs its handler only
    where SIGINT is not ignored, and a runner started as a background job ignores it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent PID, state, start time) of a process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every process below `pid`, as PID -> start time (a reused PID has another)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found, todo = {}, [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            found[child] = start
            todo.append(child)
    return found


def alive(pid: int, start: int) -> bool:
    """The process still runs (a zombie has finished; a reused PID is another process)."""
    stat = proc_stat(pid)
    return stat is not None and stat[1] != "Z" and stat[2] == start


def workers(pid: int) -> dict[int, int]:
    """The runner's worker processes (multiprocessing spawns them through spawn_main)."""
    found = {}
    for child, start in descendants(pid).items():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found[child] = start
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def catches_sigint(pid: int) -> bool:
    """Python's Ctrl-C handler is installed (not ignored, not the default)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & SIGINT_BIT)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)


@contextmanager
def bench(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A `ganno bench` process on tmp_path/out and its stderr file; killed on the way out."""
    err = tmp_path / "stderr.txt"
    with err.open("w") as stream:
        proc = subprocess.Popen(
            [GANNO, "bench", *args, "--out", str(tmp_path / "out")],
            stdout=subprocess.DEVNULL,
            stderr=stream,
            env=ENV,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
    try:
        yield proc, err
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group of the session it leads
        except ProcessLookupError:
            pass
        proc.wait()


def test_a_second_bench_on_one_folder_fails_at_once_naming_the_first(tmp_path):
    with bench(tmp_path, *LONG_RUN, "--workers", "1") as (first, _):
        lock = tmp_path / "out" / ".ganno.lock"
        wait_for(
            lambda: lock.exists() and lock.read_text().strip() == str(first.pid),
            120,
            "the first bench to hold the folder",
        )
        second = subprocess.run(
            [GANNO, "bench", *LONG_RUN, "--workers", "1", "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
        )
        assert first.poll() is None  # the second gave up while the first was still running
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr.startswith("ganno: error: ") and second.stderr.count("\n") == 1
    assert f"(PID {first.pid})" in second.stderr


def test_ctrl_c_stops_bench_within_two_seconds_with_a_resume_hint(tmp_path):
    with bench(tmp_path, *LONG_RUN, "--workers", "2") as (proc, err):
        wait_for(
            lambda: len(workers(proc.pid)) == 2 and catches_sigint(proc.pid),
            120,
            "two workers and the runner's Ctrl-C handler",
        )
        started = workers(proc.pid)
        began = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        code = proc.wait(timeout=30)
        took = time.monotonic() - began
        wait_for(lambda: not any(alive(p, s) for p, s in started.items()), 5, "workers to end")
    text = err.read_text()
    assert code == 130 and took < 2.0, (code, took, text)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text  # runner nor workers
    last = text.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("ganno: interrupted;") and "rerun the same command" in last


def test_a_killed_bench_leaves_no_worker_running(tmp_path):
    with bench(tmp_path, *LONG_RUN, "--workers", "2") as (proc, _):
        results = tmp_path / "out" / "results.jsonl"
        wait_for(
            lambda: len(workers(proc.pid)) == 2 and results.exists() and results.stat().st_size,
            120,
            "two workers, one of them done with a unit",
        )
        below = descendants(proc.pid)  # the workers and multiprocessing's resource tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not any(alive(p, s) for p, s in below.items()), 5, "workers to end")


RAY_DRIVER = """
import sys

import ray

from benchmarks.runner import connect_ray

assert connect_ray("local")
print(ray.util.get_node_ip_address(), ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def listening_sockets() -> dict[int, str]:
    """Socket inode -> local IP of every listening TCP socket of this network namespace."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = str(ipaddress.ip_address(words))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return inodes


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_the_local_ray_of_the_benchmark_listens_on_loopback_only():
    pytest.importorskip("ray")
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", RAY_DRIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        node_ip, gcs_address = proc.stdout.readline().split()
        assert node_ip == "127.0.0.1" and gcs_address.startswith("127.0.0.1:")
        ours = socket_inodes(proc.pid).union(*map(socket_inodes, descendants(proc.pid)))
        listening = {inode: ip for inode, ip in listening_sockets().items() if inode in ours}
        assert len(listening) >= 2  # at least the GCS and the raylet
        assert all(map(is_loopback, listening.values())), listening
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
