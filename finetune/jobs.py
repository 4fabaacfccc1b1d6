"""Resumable, parallel per-molecule jobs for the dataset builders.

:func:`run_cached` runs one build function per molecule in worker processes and pickles each
result as soon as it is ready, so a killed build resumes where it stopped. The cache files are
written by this machine's own builds: only read caches you made yourself (they are pickles).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["run_cached"]


def _init_worker() -> None:
    from hip_head.finetune.labels import _init_worker as limit_threads

    limit_threads()


def run_cached(
    jobs: dict[int, tuple[Any, ...]],
    build: Callable[..., dict[str, Any]],
    work: Path,
    workers: int,
    describe: Callable[[dict[str, Any]], str] = lambda r: "",
    stems: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Run ``build(i, *jobs[i])`` for every job not yet cached under ``work``.

    Each result is pickled to ``work/<stem>.pkl`` atomically as soon as it is ready, so an
    interrupted run resumes where it stopped; a job that raises is reported on stderr, written
    to ``work/failed.txt`` and skipped (it is tried again on the next run).

    Args:
        jobs: job index -> positional arguments of ``build`` after the index.
        build: a picklable function returning a dict with ``"name"``, ``"samples"`` and
            ``"seconds"``.
        work: cache directory.
        workers: worker processes (<= 1: in this process).
        describe: extra text for the progress line of a result.
        stems: cache file name (no suffix) per job; default ``NNN``.

    Returns:
        The cached results of all jobs that succeeded, in job order.
    """
    work.mkdir(parents=True, exist_ok=True)
    cache = {i: work / f"{(stems or {}).get(i, f'{i:03d}')}.pkl" for i in jobs}
    todo = [i for i in cache if not cache[i].exists()]
    t0 = time.perf_counter()
    print(f"{len(jobs) - len(todo)} molecules cached, {len(todo)} to build", flush=True)

    def store(i: int, result: dict[str, Any]) -> None:
        tmp = cache[i].with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(result))
        os.replace(tmp, cache[i])  # atomic: a crash never leaves a half-written cache file
        print(
            f"[{time.perf_counter() - t0:7.0f} s] {i:3d} {result['name']}: "
            f"{len(result['samples'])} frames{describe(result)}, {result['seconds']:.0f} s",
            flush=True,
        )

    def failed(i: int, exc: BaseException) -> None:
        print(f"{jobs[i][0]} failed: {exc!r}", file=sys.stderr, flush=True)
        with open(work / "failed.txt", "a", encoding="utf-8") as log:
            log.write(f"{i}\t{jobs[i][0]}\t{exc!r}\n")

    if workers <= 1:
        for i in todo:
            try:
                store(i, build(i, *jobs[i]))
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                failed(i, exc)
    else:
        context = multiprocessing.get_context("forkserver")
        with cf.ProcessPoolExecutor(workers, context, initializer=_init_worker) as pool:
            futures = {pool.submit(build, i, *jobs[i]): i for i in todo}
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    store(i, fut.result())
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    failed(i, exc)
    return [pickle.loads(cache[i].read_bytes()) for i in sorted(cache) if cache[i].exists()]
