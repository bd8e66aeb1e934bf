"""Power analysis of the comparison: how often it picks the model that generated the data.

A *pilot* is a finished run on the real design: its models' data
(``data/<model>/<dataset>.nc``, a :class:`~psm_bayes.models.selection.SelectionData`
with the persona table, conditions, evidence and measured log-odds) and its
fits of PSM and every null (``fits/<model>/<dataset>-<name>.nc``).  Each
replicate of :func:`power_analysis`:

1. builds a design with ``probes_per_trait`` evaluation items per trait
   (:func:`resample_items`: items drawn from the pilot's evaluation items
   of that trait, without replacement while they last; a drawn item keeps
   its persona-table column and every condition it was measured in, and gets
   a fresh item random effect) and, on the SFT data, ``sft_seeds`` LoRA seeds
   (:func:`resample_seeds`: seed ``n`` repeats the conditions of pilot seed
   ``n mod S`` -- same pole, checkpoint and evidence -- so a seed adds one
   measurement per condition and item with the model's own noise; seed-to-seed
   variation beyond it enters only through the pilot's fitted ``logodds_sd``);
2. takes one posterior draw of the TRUE model's pilot fit (the effect sizes
   measured on the real model, their uncertainty included) and simulates every
   log-odds from that model (:func:`~psm_bayes.models.selection_simulate.forward`);
3. fits PSM and every null with NUTS and compares them by the run's
   leave-one-item-out PSIS-LOO (:func:`~psm_bayes.experiments.analysis.fits.grouped_compare`);
4. decides as the run does: ``claims_psm`` is the pre-stated criterion
   "PSM beats every null by more than ``k`` se"
   (:func:`~psm_bayes.experiments.analysis.criteria.psm_beats_nulls`); ``best`` is the
   model with the highest elpd.

The comparison is *right* when it claims PSM with PSM true, and does not
claim PSM with a null true (:func:`pick_rates`, per truth and design).  The item terms integrate the
item effect out, as the run's; no exact refits are made for Pareto
``k > 0.7`` here (their count is recorded per replicate).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from psm_bayes.experiments.analysis.criteria import psm_beats_nulls
from psm_bayes.experiments.analysis.fitting import FitSettings, PSM, fit_with_refit
from psm_bayes.experiments.analysis.fits import grouped_compare

PER_ITEM_SITES = ("item_effect", "logodds_mean", "drift")
"""Sites redrawn for every simulated design: they belong to items and to conditions (each context and LoRA
run has its own Yes offset, drawn from its type's fitted ``response_bias`` and ``drift_sd``), not to the
model's effect sizes."""


@dataclass(frozen=True)
class Pilot:
    """The real design and the fits that give the simulated effect sizes.

    Attributes
    ----------
    data : SelectionData
        With measured ``logodds`` (the design is kept, the log-odds are simulated).
    fits : dict of str to xarray.DataTree
        Posterior of each model fitted to ``data`` (catalogue name -> fit).
    source : str
        Where the pilot came from (reported).
    config : dict
        The pilot run's configuration (``results.json``), when known.
    """

    data: Any
    fits: dict
    source: str = ""
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data.has_measurements:
            raise ValueError("data: a pilot needs measured log-odds (measurement_* fields)")
        if PSM not in self.fits:
            raise ValueError(f"fits: expected a {PSM} fit among {sorted(self.fits)}")


def load_run_data(run_dir: str | os.PathLike, llm: str | None = None, dataset: str = "icl",
                  flag: str = "run_dir") -> tuple[Any, str]:
    """``(data, llm)``: the :class:`SelectionData` a finished ``psm-bayes run`` fitted, ``data/<llm>/<dataset>.nc``.

    ``llm`` defaults to the only (or first) language model of the run; ``flag`` names the folder's
    option in error messages.
    """
    from psm_bayes import io
    from psm_bayes.models.selection import SelectionData

    root = Path(run_dir)
    if dataset not in ("icl", "sft"):
        raise ValueError(f"dataset: expected 'icl' or 'sft', got {dataset!r}")
    found = sorted(p.parent.name for p in root.glob(f"data/*/{dataset}.nc"))
    if not found:
        raise FileNotFoundError(f"{flag}: {str(root)!r} has no data/<model>/{dataset}.nc; expected the --out "
                                "folder of a finished `psm-bayes run`")
    llm = found[0] if llm is None else llm
    if llm not in found:
        raise ValueError(f"llm: {llm!r} is not in the {flag}; expected one of {found}")
    return io.load_data(root / "data" / llm / f"{dataset}.nc", cls=SelectionData, flag=flag), llm


def load_pilot(run_dir: str | os.PathLike, llm: str | None = None, dataset: str = "icl") -> Pilot:
    """The pilot of a finished ``psm-bayes run`` folder (``--out`` of the run).

    Parameters
    ----------
    run_dir : path
        The run's output folder.
    llm : str, optional
        Which language model's data (a sub-folder of ``data/``); default: the only one, or the first.
    dataset : {"icl", "sft"}
    """
    from psm_bayes import io

    root = Path(run_dir)
    data, llm = load_run_data(root, llm, dataset, flag="pilot")
    fits = {p.stem.split("-", 1)[1]: io.load_datatree(p, flag="pilot")
            for p in sorted((root / "fits" / llm).glob(f"{dataset}-*.nc"))}
    results = root / "results.json"
    config = json.loads(results.read_text()).get("config", {}) if results.is_file() else {}
    return Pilot(data, fits, f"{root}/{llm}/{dataset}", config)


def resample_items(data: Any, probes_per_trait: int, rng: np.random.Generator) -> Any:
    """A design with ``probes_per_trait`` evaluation items per trait, drawn from the measured ones.

    Items are drawn without replacement while a trait has enough and with
    replacement beyond; each drawn item is a new column (a copy of the source
    item's persona-table column, traits and kernels) carrying every
    measurement row (condition) of its source.  Unmeasured columns (shot,
    SFT and prior items) are kept, so evidence and features are unchanged.
    """
    if probes_per_trait < 1:
        raise ValueError(f"probes_per_trait: expected >= 1, got {probes_per_trait}")
    measured = np.unique(data.measurement_item)
    traits = np.asarray(data.item_trait if data.item_trait is not None else data.items, dtype=object)
    sources = []
    for t in dict.fromkeys(traits[measured]):
        pool = measured[traits[measured] == t]
        reps = int(np.ceil(probes_per_trait / pool.size))
        picks = np.concatenate([rng.permutation(pool) for _ in range(reps)])[:probes_per_trait]
        sources.extend(int(j) for j in picks)
    I = data.n_items
    src = np.asarray(sources)
    cols = np.concatenate([np.arange(I), src])
    new_ids = tuple(data.items) + tuple(f"{data.items[j]}#{n}" for n, j in enumerate(src))
    rows_c, rows_i = [], []
    for n, j in enumerate(src):
        keep = data.measurement_item == j
        rows_c.append(data.measurement_condition[keep])
        rows_i.append(np.full(int(keep.sum()), I + n))
    pad = np.zeros((data.n_conditions, src.size, data.sft_evidence.shape[2]), dtype=data.sft_evidence.dtype)
    return data.replace(
        loglik=data.loglik[:, cols], yes_option=data.yes_option[cols], matching_option=data.matching_option[cols],
        sft_evidence=np.concatenate([data.sft_evidence, pad], 1), icl_evidence=np.concatenate([data.icl_evidence, pad], 1),
        items=new_ids, item_trait=None if data.item_trait is None else tuple(traits[cols].tolist()),
        **{k: None if getattr(data, k) is None else getattr(data, k)[np.ix_(cols, cols)]
           for k in ("profile_similarity", "surface_similarity")},
        bias_direction=None if data.bias_direction is None else data.bias_direction[cols],
        measurement_condition=np.concatenate(rows_c), measurement_item=np.concatenate(rows_i), logodds=None)


_SEEDED = re.compile(r"^(?P<head>.+):s(?P<seed>\d+):(?P<tail>.+)$")
"""A condition of one LoRA seed, e.g. ``sft+:s2:k6`` (pole, seed, checkpoint)."""


def condition_seeds(data: Any) -> list[int]:
    """The LoRA seeds among ``data.conditions`` (names ``<pole>:s<seed>:<checkpoint>``), sorted."""
    return sorted({int(m["seed"]) for c in data.conditions if (m := _SEEDED.match(str(c)))})


def _seeds_or_fail(data: Any) -> list[int]:
    """:func:`condition_seeds`, or a ValueError when there are none (e.g. the ICL data)."""
    seeds = condition_seeds(data)
    if not seeds:
        raise ValueError("sft_seeds: the data have no LoRA-seed conditions (names '<pole>:s<seed>:<step>'); "
                         "only the SFT data can be resampled over seeds")
    return seeds


def resample_seeds(data: Any, sft_seeds: int) -> Any:
    """A design with ``sft_seeds`` LoRA seeds: seed ``n`` repeats the conditions of pilot seed ``n mod S``.

    Conditions without a seed (``base``) are kept once.  Each new condition
    copies its source's evidence, condition type and measurement rows (same
    items); the log-odds are left to be simulated.

    Raises
    ------
    ValueError
        When ``data`` has no seeded conditions (e.g. the ICL data) or ``sft_seeds < 1``.
    """
    if sft_seeds < 1:
        raise ValueError(f"sft_seeds: expected >= 1, got {sft_seeds}")
    pilot_seeds = _seeds_or_fail(data)
    src, names = [], []
    for c, name in enumerate(data.conditions):
        if not _SEEDED.match(str(name)):
            src.append(c)
            names.append(str(name))
    for n in range(sft_seeds):
        source_seed = pilot_seeds[n % len(pilot_seeds)]
        for c, name in enumerate(data.conditions):
            m = _SEEDED.match(str(name))
            if m and int(m["seed"]) == source_seed:
                src.append(c)
                names.append(f"{m['head']}:s{n}:{m['tail']}")
    src_arr = np.asarray(src)
    rows_c, rows_i = [], []
    for new, c in enumerate(src):
        keep = data.measurement_condition == c
        rows_c.append(np.full(int(keep.sum()), new))
        rows_i.append(data.measurement_item[keep])
    return data.replace(
        conditions=tuple(names), condition_type=tuple(data.condition_type[c] for c in src),
        sft_evidence=data.sft_evidence[src_arr], icl_evidence=data.icl_evidence[src_arr],
        measurement_condition=np.concatenate(rows_c), measurement_item=np.concatenate(rows_i), logodds=None)


def posterior_draw(dt: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One joint posterior draw of a fit's model-level latent sites (per-item sites excluded)."""
    post = dt["posterior"]
    n_chain, n_draw = int(post.sizes["chain"]), int(post.sizes["draw"])
    c, d = int(rng.integers(n_chain)), int(rng.integers(n_draw))
    return {k: np.asarray(post[k].values[c, d]) for k in post.data_vars if k not in PER_ITEM_SITES}


def simulate_replicate(pilot: Pilot, truth: str, probes_per_trait: int, seed: int, priors: Any = None,
                       sft_seeds: int | None = None) -> Any:
    """Simulated data of one replicate: a resampled design observed from ``truth`` at a pilot posterior draw.

    ``sft_seeds`` (SFT data only): LoRA seeds of the design (:func:`resample_seeds`; default the pilot's).
    """
    from psm_bayes.models.selection_simulate import forward

    if truth not in pilot.fits:
        raise ValueError(f"truth: no pilot fit of {truth!r}; the pilot has {sorted(pilot.fits)}")
    rng = np.random.default_rng([seed, 31])
    base = pilot.data if sft_seeds is None else resample_seeds(pilot.data, sft_seeds)
    design = resample_items(base, probes_per_trait, rng)
    draw = forward(truth, design, priors, seed=seed, fixed=posterior_draw(pilot.fits[truth], rng))
    return design.with_observed({"logodds": draw["logodds"]})


def compare_replicate(data: Any, models: Sequence[str], settings: FitSettings, seed: int, k: float) -> dict:
    """Fit ``models`` to ``data``, compare by grouped CV and decide (one row of :func:`power_analysis`)."""
    from psm_bayes.models import catalogue

    priors = settings.priors()
    fits = {m: fit_with_refit(catalogue.model(m), data, settings, seed + j, priors=priors, progress=False)
            for j, m in enumerate(models)}
    from psm_bayes.experiments.analysis.refits import fit_item_loglik

    cmp = grouped_compare(fits, data.measurement_item, None, {m: fit_item_loglik(dt, data, priors)
                                                             for m, dt in fits.items()})
    rows = cmp["rows"]
    out = {"best": cmp["best"], "claims_psm": bool(psm_beats_nulls(cmp, k)), "n_items": cmp["n_groups"],
           "pareto_k_bad": int(sum(r["pareto_k_bad"] for r in rows.values()))}
    for m, r in rows.items():
        if m != PSM:
            out[f"psm_minus_{m}"] = r["psm_minus"]
            out[f"psm_minus_se_{m}"] = r["psm_minus_se"]
    return out


@dataclass(frozen=True)
class PowerCell:
    """One replicate: the true model, the design size (items per trait, LoRA seeds) and the seed."""

    truth: str
    probes_per_trait: int
    seed: int
    sft_seeds: int | None = None

    def key(self, fingerprint: str) -> str:
        """File name of this cell's result (changes with every setting that changes it)."""
        design = [self.truth, self.probes_per_trait, self.seed, fingerprint]
        text = json.dumps(design if self.sft_seeds is None else design + [self.sft_seeds])
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def _run_cell(pilot: Pilot, cell: PowerCell, models: tuple[str, ...], settings: FitSettings, k: float) -> dict:
    data = simulate_replicate(pilot, cell.truth, cell.probes_per_trait, cell.seed, settings.priors(), cell.sft_seeds)
    seeds = len(condition_seeds(data))
    return {"truth": cell.truth, "probes_per_trait": cell.probes_per_trait, "sft_seeds": seeds, "seed": cell.seed,
            **compare_replicate(data, models, settings, 1000 * cell.seed, k)}


def _worker(args: tuple) -> dict:
    from psm_bayes.inference import configure_jax

    configure_jax()
    return _run_cell(*args)


def power_analysis(pilot: Pilot, *, truths: Sequence[str], models: Sequence[str], probes_per_trait: Sequence[int],
                   seeds: Sequence[int], settings: FitSettings, k: float = 2.0, out_dir: str | os.PathLike | None = None,
                   workers: int = 1, progress: bool = False,
                   sft_seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Simulate-fit-compare replicates; one row per (truth, probes_per_trait, sft_seeds, seed).

    Parameters
    ----------
    pilot : Pilot
    truths : sequence of str
        Models that generate data (each needs a pilot fit).
    models : sequence of str
        Models fitted and compared (PSM first, then the nulls), as in the run.
    probes_per_trait : sequence of int
        Design sizes (evaluation items per trait).
    seeds : sequence of int
        Replicates per truth and size.
    settings : FitSettings
        NUTS settings of every fit.
    k : float
        Standard errors of the criterion (the run's ``criteria_se``).
    out_dir : path, optional
        Folder of per-replicate result files (``parts/<key>.json``, written
        atomically): a rerun skips replicates already done.
    workers : int
        Processes (spawned; each fits whole replicates).
    progress : bool
        A progress bar over replicates.
    sft_seeds : sequence of int, optional
        LoRA seeds per design (SFT data only, :func:`resample_seeds`); default: the pilot's seeds.
    """
    from tqdm import tqdm

    from psm_bayes.io import save_json

    models = tuple(models)
    if PSM not in models or len(models) < 2:
        raise ValueError(f"models: expected {PSM} and at least one null, got {list(models)}")
    fingerprint = json.dumps([pilot.source, models, settings.nuts, settings.logodds_df, k])
    seed_sizes = [None] if sft_seeds is None else [int(x) for x in sft_seeds]
    if sft_seeds is not None:
        _seeds_or_fail(pilot.data)                # before any worker starts
    cells = [PowerCell(t, int(n), int(s), z) for t in truths for n in probes_per_trait for z in seed_sizes
             for s in seeds]
    parts = None if out_dir is None else Path(out_dir) / "parts"
    n_pilot = len(condition_seeds(pilot.data))
    rows, todo = [], []
    for cell in cells:
        path = None if parts is None else parts / f"{cell.key(fingerprint)}.json"
        if path is not None and path.is_file():
            rows.append({"sft_seeds": n_pilot, **json.loads(path.read_text())})   # parts written before seeds
        else:
            todo.append((cell, path))

    def done(row: dict, path: Path | None) -> None:
        rows.append(row)
        if path is not None:
            save_json(row, path, overwrite=True)

    bar = tqdm(total=len(todo), disable=not progress, desc="power")
    if workers <= 1:
        for cell, path in todo:
            done(_run_cell(pilot, cell, models, settings, k), path)
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_worker, (pilot, c, models, settings, k)): p for c, p in todo}
            for fut in as_completed(futs):
                done(fut.result(), futs[fut])
                bar.update()
    bar.close()
    order = {(c.truth, c.probes_per_trait, n_pilot if c.sft_seeds is None else c.sft_seeds, c.seed): j
             for j, c in enumerate(cells)}
    return pd.DataFrame(sorted(rows, key=lambda r: order[(r["truth"], r["probes_per_trait"], r["sft_seeds"],
                                                          r["seed"])]))


def right(row: Any) -> bool:
    """Whether one replicate's decision is right: claims PSM exactly when PSM generated the data."""
    return bool(row["claims_psm"]) == (row["truth"] == PSM)


DESIGN = ("probes_per_trait", "sft_seeds")
"""The design axes of the power analysis (columns of its rows and rates)."""


def pick_rates(rows: pd.DataFrame, prob: float = 0.9) -> pd.DataFrame:
    """Per (truth, probes_per_trait, sft_seeds): replicates, rate of the right decision with a Wilson ``prob``
    interval, and how often each model had the best elpd."""
    from scipy import stats

    z = stats.norm.ppf(0.5 + prob / 2)
    out = []
    for (truth, n_items, n_seeds), g in rows.groupby(["truth", *DESIGN], sort=False):
        n = len(g)
        hits = int(sum(right(r) for _, r in g.iterrows()))
        p = hits / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        out.append({"truth": truth, "probes_per_trait": int(n_items), "sft_seeds": int(n_seeds),
                    "replicates": n, "right": hits,
                    "rate": p, "lo": max(0.0, centre - half), "hi": min(1.0, centre + half),
                    "claims_psm": float(g["claims_psm"].mean()), "best_is_truth": float((g["best"] == truth).mean())})
    return pd.DataFrame(out)


def smallest_powered_design(rates: pd.DataFrame, target: float = 0.8) -> dict | None:
    """The cheapest design (fewest items per trait x seeds, then fewest items) at which every truth's
    right-decision rate reaches ``target``: ``{"probes_per_trait": n, "sft_seeds": s}``, or None."""
    ok = rates.groupby(list(DESIGN))["rate"].min()
    sizes = sorted(((int(n), int(s)) for (n, s), r in ok.items() if r >= target),
                   key=lambda d: (d[0] * max(d[1], 1), d[0]))
    return dict(zip(DESIGN, sizes[0])) if sizes else None


def power_markdown(rates: pd.DataFrame, pilot: Pilot, target: float = 0.8) -> str:
    """The power table as markdown, with the chosen size."""
    lines = [f"Pilot: {pilot.source}", "",
             "| truth | probes per trait | LoRA seeds | replicates | right decision | 90% interval | claims PSM "
             "| best = truth |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rates.itertuples(index=False):
        lines.append(f"| {r.truth} | {r.probes_per_trait} | {r.sft_seeds or '-'} | {r.replicates} | {r.rate:.2f} | "
                     f"[{r.lo:.2f}, {r.hi:.2f}] | {r.claims_psm:.2f} | {r.best_is_truth:.2f} |")
    best = smallest_powered_design(rates, target)
    text = ("none of the designs tried" if best is None else
            f"{best['probes_per_trait']} probes per trait" + (f", {best['sft_seeds']} LoRA seeds"
                                                              if best["sft_seeds"] else ""))
    lines += ["", f"Smallest design with every truth's right-decision rate >= {target}: {text}."]
    return "\n".join(lines)
