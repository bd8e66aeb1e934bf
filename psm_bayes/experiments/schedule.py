"""Which core runs what: LoRA SFT in a second process while the first scores.

The LLM stages run on one torch thread each (on a shared or small CPU more
threads are slower per core). With two or more cores, a run's LoRA SFT stage
(the longest LLM stage) runs in a spawned worker process, which loads its own
float32 copy of the model from the on-disk model cache, while the main
process measures the persona table, the ICL curves and the statement
features. The NUTS fits start when both are done (they use every core: one
chain per host device).

Both processes run exactly the code of the serial order, with the same
inputs, seeds and one torch thread, so the results are identical to the
serial schedule (``tests/test_schedule.py`` compares them value for value);
only wall time changes. The worker writes into its own cache folder, so the
two never touch one file.

``schedule`` (``ExperimentConfig.schedule``, CLI ``--schedule``):

* ``"serial"``: everything in this process, in stage order;
* ``"parallel"``: SFT in a worker process;
* ``"auto"`` (default): ``"parallel"`` on a CPU with >= 2 usable cores
  when the run loads its own models, else ``"serial"``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

SCHEDULES: tuple[str, ...] = ("auto", "serial", "parallel")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                           # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_schedule(schedule: str, device: str, own_models: bool) -> str:
    """``"serial"`` or ``"parallel"`` for ``schedule`` (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if schedule != "auto":
        return schedule
    on_cpu = not str(device).startswith("cuda")
    return "parallel" if on_cpu and own_models and usable_cores() >= 2 else "serial"


def _sft_in_worker(name: str, threads: int, device: str, design: Any, settings: Any,
                   checkpoints: Sequence[int], cache_dir: str, batch_size: int) -> tuple[Any, float]:
    """The worker's job: load the float32 model and run the SFT stage (no progress bars)."""
    from psm_bayes.experiments.measure import finetune
    from psm_bayes.llm import load_model

    t0 = time.perf_counter()
    loaded = load_model(name, dtype="float32", threads=threads, device=device)
    stage = finetune.run_sft(loaded, design, settings, checkpoints, cache_dir=cache_dir,
                             batch_size=batch_size, progress=False)
    return stage, time.perf_counter() - t0


class BackgroundSFT:
    """The SFT stage of one model, running in a spawned worker process.

    Parameters
    ----------
    name : str
        Model name or path, as given to :func:`psm_bayes.llm.load_model`.
    threads : int
        Torch threads of the worker.
    device : str
    design : Design
    settings : SFTSettings
    checkpoints : sequence of int
    cache_dir : path
        The SFT stage's cache folder (only the worker writes there).
    batch_size : int

    Start it after the model has been loaded once in this process, so that
    the model cache on disk is complete before the worker reads it.
    """

    def __init__(self, name: str, threads: int, device: str, design: Any, settings: Any,
                 checkpoints: Sequence[int], cache_dir: str | os.PathLike, batch_size: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self._future: Future = self._pool.submit(_sft_in_worker, str(name), int(threads), str(device), design,
                                                 settings, tuple(checkpoints), str(Path(cache_dir)),
                                                 int(batch_size))

    def result(self) -> tuple[Any, float]:
        """Wait for the worker: ``(SFTStage, seconds the worker spent)``; its error is raised here."""
        try:
            return self._future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def cancel(self) -> None:
        """Stop waiting (on an error in the main process); the worker process is ended."""
        for p in list(getattr(self._pool, "_processes", {}).values()):
            p.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
