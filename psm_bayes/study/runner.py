"""Run a :class:`~psm_bayes.study.spec.Study`: serially, in a process pool, or on Ray.

Every finished cell is written atomically (:func:`psm_bayes.io.save_table`)
as ``OUT/parts/<cell id>.parquet``; a rerun skips cells whose part file
exists, so an interrupted study resumes where it stopped. The results table
``OUT/results.parquet`` (one row per cell, in study order) is rebuilt from
the parts at the end.

Per-cell metrics: coverage of the true latents by central posterior
intervals (overall and per site), RMSE of the posterior mean, max R-hat,
min bulk/tail ESS, divergences, and wall time of the fit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from psm_bayes.diagnostics import draws
from psm_bayes.io import mark_dir, save_json, save_table
from psm_bayes.study.spec import Cell, Study

PARTS = "parts"
RESULTS = "results.parquet"
NON_DETERMINISTIC = ("wall_time_s",)
"""Columns that differ between otherwise identical runs."""


@dataclass
class StudyRun:
    """What :func:`run_study` did.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per cell (also in ``path``).
    computed, skipped : list of str
        Ids of the cells computed now and of those found already finished.
    path : str
        The results Parquet file.
    """

    table: Any
    computed: list[str]
    skipped: list[str]
    path: str


# ---------------------------------------------------------------- one cell
def cell_metrics(dt, truth: Mapping[str, Any], names: list[str], interval: float = 0.9) -> dict[str, float]:
    """Recovery and sampler metrics of one fit against the known truth.

    Parameters
    ----------
    dt : xarray.DataTree
        A fit from :func:`psm_bayes.inference.fit_nuts` or ``fit_svi``.
    truth : mapping
        True values of (at least) the latents in ``names``.
    names : list of str
        Latent sites to score (those missing from ``truth`` are skipped).
    interval : float
        Central interval probability for coverage.

    Returns
    -------
    dict
        ``coverage`` (fraction of scalar latents inside their interval),
        ``rmse`` (posterior mean vs truth), ``coverage_<site>``,
        ``rmse_<site>``, ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min``
        (NaN with one chain), ``divergences`` (NaN without sample stats),
        ``n_params``.
    """
    import arviz as az

    post = dt["posterior"]
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    out: dict[str, float] = {}
    inside_all, err_all, draws_all = [], [], []
    for name in names:
        if name not in truth or name not in post:
            continue
        flat = draws(dt, name)
        flat = flat.reshape(flat.shape[0], -1)  # (chain * draw, P)
        d = flat.reshape(post.sizes["chain"], post.sizes["draw"], -1)
        t = np.asarray(truth[name], dtype=float).reshape(-1)
        lo, hi = np.quantile(flat, [lo_q, hi_q], axis=0)
        inside = (lo <= t) & (t <= hi)
        err = flat.mean(0) - t
        out[f"coverage_{name}"] = float(inside.mean())
        out[f"rmse_{name}"] = float(np.sqrt((err ** 2).mean()))
        inside_all.append(inside)
        err_all.append(err)
        draws_all.append(d)
    if not inside_all:
        raise ValueError(f"truth: none of the latents {names} has a true value and posterior draws to score")
    inside, err = np.concatenate(inside_all), np.concatenate(err_all)
    stacked = np.concatenate(draws_all, axis=-1)  # (chain, draw, P)
    out.update(coverage=float(inside.mean()), rmse=float(np.sqrt((err ** 2).mean())), n_params=int(inside.size))
    if stacked.shape[0] >= 2:
        out["rhat_max"] = float(np.nanmax(az.rhat(stacked)))
        out["ess_bulk_min"] = float(np.nanmin(az.ess(stacked, method="bulk")))
        out["ess_tail_min"] = float(np.nanmin(az.ess(stacked, method="tail", prob=(0.05, 0.95))))
    else:
        out["rhat_max"] = out["ess_bulk_min"] = out["ess_tail_min"] = float("nan")
    stats = dt["sample_stats"] if "sample_stats" in dt.children else None
    out["divergences"] = float(stats["diverging"].values.sum()) if stats is not None and "diverging" in stats \
        else float("nan")
    return out


def run_cell(study: Study, cell: Cell) -> dict[str, Any]:
    """Simulate, fit and score one cell; returns its results row (scored on the model's main latents)."""
    from psm_bayes.inference import fit_nuts, fit_svi
    from psm_bayes.models import catalogue

    entry = catalogue.get(study.model)
    sim_kw, pri_kw, inf_kw = cell.split()
    priors = entry.priors(**{**study.priors, **pri_kw})
    data, truth = entry.simulator()(priors, seed=cell.seed, **{**study.simulate, **sim_kw})
    fit = fit_nuts if study.method == "nuts" else fit_svi
    t0 = time.perf_counter()
    dt = fit(entry.model(study.backend), data, seed=cell.seed, priors=priors, predictive=False,
             **{**study.inference, **inf_kw})
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {"cell_id": cell.id, "cell_index": cell.index, "study": study.name, "model": study.model,
                           "backend": study.backend, "method": study.method, "seed": cell.seed}
    row.update(cell.params)
    row.update(cell_metrics(dt, truth, list(entry.latents), study.interval))
    if "svi" in dt.children:
        row["final_loss"] = float(np.asarray(dt["svi"]["loss"].values)[-1])
    row["wall_time_s"] = wall
    return row


# ---------------------------------------------------------------- storage
def _part_path(out_dir: str, cell: Cell) -> str:
    return os.path.join(out_dir, PARTS, f"{cell.id}.parquet")


def _write_part(out_dir: str, cell: Cell, row: Mapping[str, Any]) -> None:
    import pandas as pd

    save_table(pd.DataFrame([dict(row)]), _part_path(out_dir, cell), index=False)


def collect(study: Study, out_dir: str | os.PathLike):
    """The results table from the part files of ``study``'s finished cells (study order)."""
    import pandas as pd

    out_dir = os.fspath(out_dir)
    frames = [pd.read_parquet(p) for c in study.cells() if os.path.exists(p := _part_path(out_dir, c))]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).sort_values("cell_index").reset_index(drop=True)


# ---------------------------------------------------------------- driver
def run_study(study: Study, out_dir: str | os.PathLike, *, ray_address: str | None = None, workers: int = 1,
              progress: bool = True) -> StudyRun:
    """Run every unfinished cell of ``study`` and write the results table.

    Parameters
    ----------
    study : Study
    out_dir : path
        Output folder: ``study.json``, ``parts/`` (one Parquet file per
        finished cell) and ``results.parquet``.
    ray_address : str, optional
        ``None`` (default) runs in this process (or, with ``workers > 1``, in a
        pool of spawned processes); ``"local"`` starts a local Ray with
        ``workers`` CPUs; any other value joins that Ray cluster.
    workers : int
        Parallel workers (processes or Ray CPUs).
    progress : bool
        Show a progress bar over cells.

    Returns
    -------
    StudyRun
        The table and which cells were computed or skipped. If a cell raises,
        the cells finished before it keep their part files and the error
        propagates; rerunning resumes.
    """
    from tqdm import tqdm

    out_dir = os.fspath(out_dir)
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        mark_dir(out_dir, "study")
    os.makedirs(os.path.join(out_dir, PARTS), exist_ok=True)
    save_json(study.to_dict(), os.path.join(out_dir, "study.json"), kind="study", overwrite=True)
    cells = study.cells()
    done = [c for c in cells if os.path.exists(_part_path(out_dir, c))]
    todo = [c for c in cells if not os.path.exists(_part_path(out_dir, c))]
    computed: list[str] = []
    bar = tqdm(total=len(cells), initial=len(done), desc=study.name, disable=not progress, unit="cell")

    def finish(cell: Cell, row: Mapping[str, Any]) -> None:
        _write_part(out_dir, cell, row)
        computed.append(cell.id)
        bar.update(1)

    try:
        if todo and ray_address is not None:
            _run_ray(study, todo, ray_address, workers, finish)
        elif todo and workers > 1:
            _run_pool(study, todo, workers, finish)
        else:
            for cell in todo:
                finish(cell, run_cell(study, cell))
    finally:
        bar.close()
    table = collect(study, out_dir)
    path = os.path.join(out_dir, RESULTS)
    save_table(table, path, overwrite=True, index=False)
    return StudyRun(table, computed, [c.id for c in done], path)


def _run_pool(study: Study, todo: list[Cell], workers: int, finish) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_cell, study, c): c for c in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in finished:
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise f.exception()
                finish(futures[f], f.result())


def _run_ray(study: Study, todo: list[Cell], address: str, workers: int, finish) -> None:
    from psm_bayes.parallel import ray_session

    with ray_session(address, workers) as ray:
        task = ray.remote(num_cpus=1)(run_cell)
        refs = {task.remote(study, c): c for c in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    row = ray.get(ref)
                except Exception:
                    for p in pending:
                        ray.cancel(p)
                    raise
                finish(refs[ref], row)
