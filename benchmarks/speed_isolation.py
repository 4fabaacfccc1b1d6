"""Where the speed benchmark's measurements run: in this process, or one fresh child each.

On CPU every measurement runs in a fresh child process: a helper process (this module run as a
script) imports torch and builds the models and molecules once with one thread (so OpenMP has
no thread pool yet), then forks one child per (structure, method); the child sets the thread
count, builds the graph, warms up and measures (see :meth:`speed_measure.Models.measure`).
The helper stops a child that runs past ``Settings.timeout`` seconds or whose resident set
grows past ``Settings.memory_limit_gb`` GiB, and reports that (or the child's death) as the
measurement's error: a structure too big for the machine is reported, and the run goes on.
Requests and replies are JSON lines on the helper's stdin / stdout.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from speed_measure import MIB, Models, proc_status_mib
from speed_setup import Settings, Structure

__all__ = ["InProcessRunner", "ProcessRunner", "default_memory_limit_gb", "run_in_fork"]

#: Seconds between two looks at a measuring child's resident set.
_POLL_S = 0.1
GIB = 2.0**30


def default_memory_limit_gb(fraction: float = 0.8) -> float | None:
    """``fraction`` of the memory available now (``MemAvailable``), GiB; None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return round(fraction * int(line.split()[1]) * 1024 / GIB, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class InProcessRunner:
    """Measures in this process (CUDA, or ``--isolation none``: CPU peaks are then approximate).

    No timeout or memory guard applies here; a failing measurement (CUDA out of memory, say)
    is reported as its error.

    Args:
        settings: the run's settings.
    """

    def __init__(self, settings: Settings) -> None:
        import torch

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.models = Models(settings)
        self.info = self.models.info()

    def describe(self, structure: Structure) -> dict[str, Any]:
        """See :meth:`speed_measure.Models.describe`."""
        return self.models.describe(structure)

    def measure(self, structure: Structure, method: str) -> dict[str, Any]:
        """See :meth:`speed_measure.Models.measure`; errors come back as
        ``{"ok": False, "error": why}``."""
        try:
            return {"ok": True, **self.models.measure(structure, method, fresh_process=False)}
        except Exception as err:  # reported in the JSON; the run goes on
            return {"ok": False, "error": f"{type(err).__name__}: {err}"}

    def close(self) -> None:
        """Nothing to release."""


class ProcessRunner:
    """Measures each (structure, method) in a fresh child forked from a helper process.

    Args:
        settings: the run's settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.info = self._request(asdict(settings))["info"]

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the benchmark helper process exited (status {self.proc.wait()}); "
                "see its messages above"
            )
        reply = json.loads(line)
        if "fatal" in reply:
            raise RuntimeError(f"the benchmark helper failed: {reply['fatal']}")
        return reply

    def describe(self, structure: Structure) -> dict[str, Any]:
        """See :meth:`speed_measure.Models.describe` (counts made in a guarded child)."""
        return self._request({"cmd": "describe", "structure": structure})

    def measure(self, structure: Structure, method: str) -> dict[str, Any]:
        """See :meth:`speed_measure.Models.measure`, run in a fresh child process."""
        return self._request({"cmd": "measure", "structure": structure, "method": method})

    def close(self) -> None:
        """Stop the helper process."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def run_in_fork(
    task: Callable[[], dict[str, Any]],
    threads: int,
    timeout: float,
    memory_limit_gb: float | None = None,
) -> dict[str, Any]:
    """Run ``task`` in a forked child with ``threads`` torch threads, under two guards.

    Args:
        task: returns a JSON-serialisable dict.
        threads: torch threads in the child.
        timeout: seconds after which the child is killed.
        memory_limit_gb: resident set (GiB) above which the child is killed (None: no limit);
            checked every 0.1 s, so a fast allocation may overshoot it a little.

    Returns:
        ``{"ok": True, **task()}``, or ``{"ok": False, "error": why}`` (the task's exception,
        the timeout, the memory guard or the child's death).
    """
    import torch

    read_end, write_end = os.pipe()
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            torch.set_num_threads(threads)
            result = {"ok": True, **task()}
        except BaseException as err:  # reported to the parent
            result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        with os.fdopen(write_end, "wb") as handle:
            handle.write(json.dumps(result).encode())
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    stopped: str | None = None
    with os.fdopen(read_end, "rb", buffering=0) as handle:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = f"timeout: still running after --timeout {timeout:g} s"
            elif memory_limit_gb is not None and not chunks:
                rss = proc_status_mib("VmRSS", pid)
                if rss is not None and rss * MIB > memory_limit_gb * GIB:
                    stopped = (
                        f"memory guard: resident set {rss * MIB / GIB:.1f} GiB > "
                        f"--memory-limit {memory_limit_gb:g} GiB"
                    )
            if stopped:
                os.kill(pid, signal.SIGKILL)
                break
            ready, _, _ = select.select([handle], [], [], min(remaining, _POLL_S))
            if ready:
                chunk = handle.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if stopped:
        return {"ok": False, "error": stopped}
    if not chunks:
        if os.WIFSIGNALED(status):
            how = f"killed by signal {os.WTERMSIG(status)} (out of memory?)"
        else:
            how = f"exit status {os.WEXITSTATUS(status)}"
        return {"ok": False, "error": f"measuring process died: {how}"}
    return json.loads(b"".join(chunks))


def _serve(models: Models, settings: Settings, threads: int, protocol: Any) -> None:
    """Answer ``describe`` / ``measure`` requests from stdin until ``quit``."""
    guard = (threads, settings.timeout, settings.memory_limit_gb)
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        structure = request["structure"]
        try:
            models.molecules(structure)  # built here once, inherited by the children
            if request["cmd"] == "describe":
                reply = run_in_fork(lambda s=structure: models.describe(s), *guard)
                if reply.pop("ok"):
                    reply.pop("error", None)
                else:
                    error = reply["error"]
                    reply = {**models.describe(structure, counts=False), "describe_error": error}
            else:

                def task(s: Structure = structure, method: str = request["method"]) -> dict:
                    return models.measure(s, method, fresh_process=True)

                reply = run_in_fork(task, *guard)
        except Exception as err:  # reported to the parent, which stops
            reply = {"fatal": f"{type(err).__name__}: {err}"}
        protocol.write(json.dumps(reply) + "\n")


def zygote_main() -> int:
    """The helper process of :class:`ProcessRunner`: settings on the first stdin line."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed goes to stderr, stdout carries the replies only
    settings = Settings(**json.loads(sys.stdin.readline()))
    try:
        import torch

        threads = settings.threads or torch.get_num_threads()
        torch.set_num_threads(1)  # no OpenMP pool before fork(): children would hang on it
        models = Models(settings)
        info = {**models.info(), "torch_threads": threads}
        gc.collect()
        gc.freeze()  # the children's gc.collect() then neither walks nor copies these objects
    except Exception as err:  # reported to the parent, which stops
        protocol.write(json.dumps({"fatal": f"{type(err).__name__}: {err}"}) + "\n")
        return 1
    protocol.write(json.dumps({"ready": True, "info": info}) + "\n")
    _serve(models, settings, threads, protocol)
    return 0


if __name__ == "__main__":
    sys.exit(zygote_main())
