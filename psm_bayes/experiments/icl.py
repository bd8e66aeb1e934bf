"""In-context learning experiment with a real language model.

Design
------
* Evaluation items and shot sequences come from the design
  (:mod:`psm_bayes.experiments.design`): for each trait ``t`` and ordering
  ``o`` a sequence of ``max_shots`` training statements of ``t`` answered
  with the positive pole's matching answer.  The ``n``-shot prompt uses its
  first ``n`` shots (nested prefixes), for ``n`` in the design's shot counts.
* Each prompt is ``fewshot_context(shots) + item_text(held-out item)``, for
  every held-out item of EVERY chosen trait (same trait: does the model pick
  up the persona? other traits: does the persona generalise?).  The
  measurement is ``nll = -log p(matching answer)`` renormalised over Yes/No,
  the matching answer being the positive pole's answer for the item's own
  trait.

Efficiency (2 CPU cores): both options come from one forward pass (the
next-token distribution after ``"Answer:"``), and all held-out items of one
(trait, ordering, n) share the shots' KV cache
(:class:`~psm_bayes.llm.nexttoken.NextTokenScorer`).  Every such
group is cached as a ``.npy`` file keyed by a hash of the model and the exact
prompts, so an interrupted run resumes.

ICLData
-------
:func:`build_icl_data` turns the measurements into
:class:`psm_bayes.models.icl_curves.ICLData`: one row per (shot trait,
ordering, n, held-out item); curve id ``"<shot trait>-><item trait>"``; n = 0
rows appear once per (curve, item).  ``shot_loglik[r, k]`` sums the persona
table's ``L[k, shot item, shot answer]`` (renormalised over Yes/No) over the
row's shots; ``target_loglik[r] = L[:, item, :]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from psm_bayes.data import DataError
from psm_bayes.experiments.design import ShotSequence
from psm_bayes.experiments.persona_table import table_lookup
from psm_bayes.probes import OPTIONS, ProbeSet


# ---------------------------------------------------------------- prompts
def icl_prompts(probes: ProbeSet, seq: ShotSequence | None, n: int, eval_idx: np.ndarray) -> list[str]:
    """Prompts ``fewshot_context(first n shots) + item_text(item)`` for every held-out item."""
    from psm_bayes.llm import prompts

    ctx = ""
    if n > 0:
        if seq is None or n > len(seq.items):
            raise DataError(f"n: {n} shots requested from a sequence of {0 if seq is None else len(seq.items)}")
        ctx = prompts.fewshot_context([(probes.items.prompts[i], OPTIONS[a])
                                       for i, a in zip(seq.items[:n], seq.answers[:n])])
    return [ctx + prompts.item_text(probes.items.prompts[i]) for i in eval_idx]


# ---------------------------------------------------------------- cache
class ArrayCache:
    """Directory of ``<key>.npy`` arrays, written atomically (temp file + ``os.replace``)."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(*parts: Any) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(repr(p).encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:32]

    def get(self, key: str) -> np.ndarray | None:
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        if self.directory is None:
            return
        from psm_bayes.io import atomic_path

        with atomic_path(self.directory / f"{key}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(value))


# ---------------------------------------------------------------- measurement
def measure_icl(loaded: Any, probes: ProbeSet, eval_idx: np.ndarray, sequences: Sequence[ShotSequence],
                n_values: Sequence[int], *, cache_dir: str | Path | None = None, batch_size: int = 16,
                progress: bool = True) -> pd.DataFrame:
    """Score every (sequence, n, held-out item) prompt with the real model.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    probes : ProbeSet
    eval_idx : array of int
        Held-out items (indices into ``probes``).
    sequences : sequence of ShotSequence
    n_values : sequence of int
        Shot counts (0 is measured once, without shots).
    cache_dir : path, optional
        :class:`ArrayCache` directory (resume).
    batch_size : int
    progress : bool

    Returns
    -------
    pandas.DataFrame
        One row per measurement: ``shot_trait`` (``""`` for n = 0),
        ``ordering`` (-1 for n = 0), ``n_shots``, ``item`` (probe index),
        ``item_id``, ``item_trait``, ``logp_yes``, ``logp_no`` (true log p),
        ``target_option``, ``nll`` (renormalised over Yes/No).
    """
    from psm_bayes.llm.nexttoken import NextTokenScorer, normalised_logp

    nts = NextTokenScorer(loaded.model, loaded.tokenizer, OPTIONS, batch_size=batch_size)
    cache = ArrayCache(cache_dir)
    groups: list[tuple[ShotSequence | None, int]] = [(None, 0)] if 0 in n_values else []
    groups += [(s, n) for s in sequences for n in n_values if n > 0]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(groups), unit="group", desc="ICL prompts")
    rows = []
    try:
        for seq, n in groups:
            texts = icl_prompts(probes, seq, n, eval_idx)
            key = cache.key("icl-v1", loaded.key, texts)
            lp = cache.get(key)
            if lp is None or lp.shape != (len(texts), 2):
                lp = nts.score(texts)
                cache.put(key, lp)
            norm = normalised_logp(lp)
            for j, i in enumerate(eval_idx):
                tgt = int(probes.matching_option[i])
                rows.append({"shot_trait": "" if seq is None else seq.trait,
                             "ordering": -1 if seq is None else seq.ordering, "n_shots": n, "item": int(i),
                             "item_id": probes.items.ids[i], "item_trait": str(probes.trait[i]),
                             "logp_yes": lp[j, 0], "logp_no": lp[j, 1], "target_option": tgt,
                             "nll": float(-norm[j, tgt])})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- ICLData
def build_icl_data(measurements: pd.DataFrame, sequences: Sequence[ShotSequence], probes: ProbeSet,
                   loglik: Any, prior_weights: np.ndarray) -> Any:
    """:class:`~psm_bayes.models.icl_curves.ICLData` from :func:`measure_icl` output.

    Parameters
    ----------
    measurements : pandas.DataFrame
        From :func:`measure_icl`.
    sequences : sequence of ShotSequence
        The sequences measured.
    probes : ProbeSet
        The probes indexed by ``measurements.item`` and the shots.
    loglik : xarray.DataArray (persona, item, option)
        The persona table, renormalised over options
        (:func:`psm_bayes.experiments.persona_table.normalised_table`), covering the
        held-out items and every shot item.
    prior_weights : array (persona,)
        Pre-training prior ``pi``.

    Returns
    -------
    ICLData
        Curves ``"<shot trait>-><item trait>"``; rows sorted by curve, ordering, n.
    """
    from psm_bayes.models.icl_curves import ICLData

    Lv, col = table_lookup(loglik, probes)

    traits = list(dict.fromkeys(s.trait for s in sequences))
    item_traits = list(dict.fromkeys(measurements["item_trait"]))
    curves = [f"{t}->{u}" for t in traits for u in item_traits]
    zero = measurements[measurements["n_shots"] == 0]
    cum = {}
    for s in sequences:
        per = np.stack([Lv[:, col(i), a] for i, a in zip(s.items, s.answers)], axis=1)  # (K, n)
        cum[(s.trait, s.ordering)] = np.concatenate([np.zeros((Lv.shape[0], 1)), np.cumsum(per, axis=1)], axis=1)
    curve, n_shots, nll, shot_ll, tgt_ll, tgt_opt = [], [], [], [], [], []

    def add(c: str, n: int, row: Any, shots: np.ndarray) -> None:
        curve.append(c)
        n_shots.append(n)
        nll.append(max(float(row.nll), 0.0))
        shot_ll.append(shots)
        tgt_ll.append(Lv[:, col(int(row.item)), :])
        tgt_opt.append(int(row.target_option))

    K = Lv.shape[0]
    for t in traits:
        for row in zero.itertuples():
            add(f"{t}->{row.item_trait}", 0, row, np.zeros(K))
        sub = measurements[(measurements["shot_trait"] == t) & (measurements["n_shots"] > 0)]
        for row in sub.itertuples():
            add(f"{t}->{row.item_trait}", int(row.n_shots), row, cum[(t, int(row.ordering))][:, int(row.n_shots)])
    order = sorted(range(len(curve)), key=lambda r: (curves.index(curve[r]), n_shots[r]))
    pick = (lambda xs: [xs[r] for r in order])
    return ICLData(curve=tuple(pick(curve)), n_shots=np.array(pick(n_shots)), nll=np.array(pick(nll)),
                   shot_loglik=np.array(pick(shot_ll)), target_loglik=np.array(pick(tgt_ll)),
                   target_option=np.array(pick(tgt_opt)), prior_weights=np.asarray(prior_weights),
                   curves=tuple(curves), personas=tuple(str(p) for p in loglik.coords["persona"].values))


def icl_summary(measurements: pd.DataFrame) -> pd.DataFrame:
    """Mean observed ``nll`` per (shot trait, same/other trait, n): the curves at a glance."""
    m = measurements.copy()
    zero = m[m["n_shots"] == 0]
    parts = []
    for t in sorted(set(m["shot_trait"]) - {""}):
        z = zero.assign(shot_trait=t)
        parts.append(pd.concat([z, m[m["shot_trait"] == t]]))
    if not parts:
        return pd.DataFrame()
    m = pd.concat(parts)
    m["target"] = np.where(m["item_trait"] == m["shot_trait"], "same trait", "other traits")
    return m.groupby(["shot_trait", "target", "n_shots"])["nll"].agg(["mean", "sem", "count"]).reset_index()


# ---------------------------------------------------------------- the stage
@dataclass(frozen=True)
class ICLStage:
    """Output of :func:`run_icl`.

    Attributes
    ----------
    measurements : pandas.DataFrame
        :func:`measure_icl` rows.
    data : ICLData
        :func:`build_icl_data` of them.
    """

    measurements: pd.DataFrame
    data: Any


def run_icl(loaded: Any, design: Any, personas: Any, *, cache_dir: str | Path | None = None, batch_size: int = 16,
            progress: bool = True) -> ICLStage:
    """Measure the ICL curves of a design and build the ICL data.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    design : Design
    personas : PersonaStage
        Gives the persona table (``loglik``) and the prior.
    cache_dir : path, optional
    batch_size : int
    progress : bool
    """
    meas = measure_icl(loaded, design.probes, design.eval_idx, design.sequences, design.n_values,
                       cache_dir=cache_dir, batch_size=batch_size, progress=progress)
    return ICLStage(meas, build_icl_data(meas, design.sequences, design.probes, personas.loglik,
                                         personas.prior_weights))
