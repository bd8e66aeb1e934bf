"""SBC results on disk: every file written atomically through :mod:`psm_bayes.io`, and read back.

An output folder holds ``ranks.parquet`` (one row per replicate and
parameter), ``calibration.csv`` (the per-parameter verdict), ``summary.json``
and the figures ``rank_hist.png`` and ``ecdf_diff.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from psm_bayes.io import atomic_write, load_table, mark_dir, save_json, save_table
from psm_bayes.sbc.config import SBCConfig
from psm_bayes.sbc.result import SBCResult

FILES = {"ranks": "ranks.parquet", "calibration": "calibration.csv", "summary": "summary.json",
         "rank_hist": "rank_hist.png", "ecdf_diff": "ecdf_diff.png"}
SUMMARY_KIND = "sbc-summary"


def _save_figure(fig, path: Path, overwrite: bool) -> None:
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90), overwrite=overwrite)
    finally:
        plt.close(fig)


def save_result(result: SBCResult, out_dir: str | os.PathLike, alpha: float = 0.01, *,
                overwrite: bool = False) -> dict[str, str]:
    """Write ``result``'s files (see the module docstring) to ``out_dir``, each atomically.

    A new (or empty) ``out_dir`` is created and marked as a psm-bayes output
    folder, so a later ``overwrite=True`` may replace these files; existing
    files are never replaced unless ``overwrite`` (and written by psm-bayes).

    Returns
    -------
    dict
        ``{key: path}`` for the keys of :data:`FILES`.
    """
    from psm_bayes.sbc.plots import plot_ecdf, plot_ranks

    out = Path(out_dir)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        mark_dir(out, "sbc")
    paths = {k: out / name for k, name in FILES.items()}
    save_table(result.to_frame(), paths["ranks"], overwrite=overwrite, index=False)
    save_table(result.calibration(alpha), paths["calibration"], overwrite=overwrite)
    summary = {**result.summary(alpha), "params": list(result.params)}
    save_json(summary, paths["summary"], kind=SUMMARY_KIND, overwrite=overwrite)
    _save_figure(plot_ranks(result), paths["rank_hist"], overwrite)
    _save_figure(plot_ecdf(result, alpha), paths["ecdf_diff"], overwrite)
    return {k: str(p) for k, p in paths.items()}


def load_result(out_dir: str | os.PathLike) -> SBCResult:
    """Read an :class:`SBCResult` written by :func:`save_result`."""
    out = Path(out_dir)
    path = out / FILES["summary"]
    if not path.is_file():
        raise FileNotFoundError(f"out_dir: {str(out)!r} has no {FILES['summary']}; expected an SBC output folder")
    summary = json.loads(path.read_text())
    if summary.get("psm_bayes_format") != SUMMARY_KIND:
        raise ValueError(f"out_dir: {str(path)!r} is not an SBC summary written by psm-bayes")
    params = summary["params"]
    frame = load_table(out / FILES["ranks"])
    R, P = len(frame) // len(params), len(params)

    def col(name: str) -> np.ndarray:
        return frame[name].to_numpy().reshape(R, P)

    return SBCResult(model=summary["model"], params=params, ranks=col("rank"), truth=col("truth"),
                     post_mean=col("post_mean"), post_sd=col("post_sd"), ess_bulk=col("ess_bulk"),
                     divergences=col("divergences")[:, 0], accept_prob=col("accept_prob")[:, 0],
                     config=SBCConfig(**summary["config"]), method=summary["method"],
                     wall_time=summary["wall_time_s"], seed=summary["seed"],
                     meta=summary.get("meta") or {},
                     log_scale=col("log_scale")[0].astype(bool) if "log_scale" in frame else None,
                     post_sd_scale=col("post_sd_scale") if "post_sd_scale" in frame else None)
