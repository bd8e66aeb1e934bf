"""From measurements to the models' data: one :class:`~psm_bayes.models.selection.SelectionData` per comparison.

Every model and null of the persona-selection family sees the same object:
the persona table ``L`` (normalised over Yes/No) on every table item, the
pre-training prior ``pi`` (EM on the prior items), the evidence count
tensors of each condition -- ``icl_evidence[c, i, o]`` (shots of condition
``c`` answering item ``i`` with option ``o``) and ``sft_evidence[c, i, o]``
(how many times fine-tuning trained on item ``i`` with answer ``o`` up to
the condition's checkpoint) -- item traits, the item kernels of the nulls,
and the observed log-odds of the matching answer per (condition, evaluation item).

Condition types: ``base`` (no evidence, the zero reference), ``icl-n<n>``
(every ICL condition of ``n`` shots), ``sft-k<step>`` (every SFT condition
at checkpoint ``step``: both poles, every seed and SFT trait) and ``cross``
(fine-tuned, then opposite-pole shots). Every condition has its own Yes
offset, pooled within its type (``drift`` of
:mod:`psm_bayes.models.selection`), so a Yes/No drift of each context,
LoRA run and checkpoint is absorbed by every model alike.

Kernels: ``profile_similarity``, the cosine similarity of two items' centred
matching log-odds profiles across the personas of the table
(:func:`psm_bayes.models.selection.profile_similarity`), and
``surface_similarity``, the similarity of the statement texts
(:mod:`psm_bayes.experiments.measure.surface`, when its stage is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.data import DataError
from psm_bayes.experiments.design import Design


@dataclass(frozen=True)
class Datasets:
    """The model data of one language model.

    Attributes
    ----------
    icl : SelectionData
        ``base`` + ICL conditions.
    sft : SelectionData
        ``base`` + SFT conditions (every checkpoint, pole and seed).
    joint : SelectionData
        ``base`` + ICL + SFT measurements (fitted for the cross-prediction); its conditions include the
        cross conditions, unmeasured, so a joint fit carries their Yes offsets (drawn from the prior).
    cross : SelectionData or None
        ``joint`` plus the cross conditions' measurements, appended last
        (prediction only; ``n_cross`` rows).
    n_cross : int
    rows : dict of str to pandas.DataFrame
        The measurement rows of each dataset, in the data's row order.
    """

    icl: Any
    sft: Any
    joint: Any
    cross: Any
    n_cross: int
    rows: dict


def condition_type(row: pd.Series, checkpoints: tuple[int, ...]) -> str:
    """The condition type of a measurement row's condition (see the module docstring)."""
    if row["kind"] in ("base", "cross"):
        return str(row["kind"])
    if row["kind"] == "icl":
        return f"icl-n{int(row['n_shots'])}"
    step = int(row["step"])
    if step not in checkpoints:
        raise DataError(f"checkpoints: SFT condition {row.name!r} is at step {step}, not one of {list(checkpoints)}")
    return f"sft-k{step}"


def surface_kernel(surface: Any, item_ids: list[str]) -> np.ndarray | None:
    """The surface stage's ``(item, item)`` similarity in the order of ``item_ids`` (``None`` without a stage)."""
    if surface is None:
        return None
    pos = {iid: j for j, iid in enumerate(surface.item_ids)}
    missing = [i for i in item_ids if i not in pos]
    if missing:
        raise DataError(f"surface: no statement features for items {missing[:5]}; expected the design's table items")
    idx = np.array([pos[i] for i in item_ids])
    return surface.similarity[np.ix_(idx, idx)]


def build_datasets(design: Design, personas: Any, icl: Any, sft: Any, checkpoints: tuple[int, ...],
                   surface: Any = None) -> Datasets:
    """The :class:`Datasets` of one language model's stages.

    Parameters
    ----------
    design : Design
    personas : PersonaStage
    icl : ICLStage
    sft : SFTStage
    checkpoints : tuple of int
        The SFT checkpoints (every SFT condition must be at one of them).
    surface : SurfaceStage, optional
        Statement-text features (:func:`psm_bayes.experiments.measure.surface.measure_surface`), for the
        ``surface_similarity`` null and the ``encompassing`` model.
    """
    from psm_bayes.models.selection import SelectionData, profile_similarity

    probes = design.probes
    L = personas.loglik.transpose("persona", "item", "option")
    item_ids = [str(x) for x in L.coords["item"].values]
    col = {iid: j for j, iid in enumerate(item_ids)}
    pidx = {iid: j for j, iid in enumerate(probes.items.ids)}
    tidx = np.array([pidx[i] for i in item_ids])
    matching = probes.matching_option[tidx]
    all_rows = pd.concat([icl.measurements, sft.measurements], ignore_index=True)
    conds = all_rows.drop_duplicates("condition").set_index("condition")
    names = list(conds.index)
    C, I = len(names), len(item_ids)
    icl_ev = np.zeros((C, I, 2), dtype=np.int64)
    sft_ev = np.zeros((C, I, 2), dtype=np.int64)
    seqs = {(s.trait, s.ordering): s for s in design.sequences}
    # SFT / cross rows (finetune.SFTStage.measurements): sft_trait (trait fine-tuned), pole, seed, step
    # (checkpoint), n_shots and ordering (the opposite-pole shots of a cross condition, of the SFT trait)
    episodes = {t: design.sft_episodes(t) for t in design.sft_traits}
    sft_cols = {t: np.array([col[probes.items.ids[i]] for i in e], dtype=int) for t, e in episodes.items()}
    for c, name in enumerate(names):
        r = conds.loc[name]
        if r["kind"] == "icl" or r["kind"] == "cross":
            trait = r["shot_trait"] if r["kind"] == "icl" else r["sft_trait"]
            pole = r["pole"] if r["kind"] == "icl" else ("-" if r["pole"] == "+" else "+")
            s = seqs[(trait, int(r["ordering"]))]
            n = int(r["n_shots"])
            for i, a in zip(s.items[:n], s.answers(pole)[:n]):
                icl_ev[c, col[probes.items.ids[i]], a] += 1
        if r["kind"] in ("sft", "cross"):       # times each episode of the SFT trait was trained on, as its pole
            t = r["sft_trait"]
            seen = sft.evidence[(t, r["pole"], int(r["seed"]), int(r["step"]))]
            m = probes.matching_option[episodes[t]]
            ans = m if r["pole"] == "+" else 1 - m
            np.add.at(sft_ev[c], (sft_cols[t], ans), seen)
    ctype = tuple(condition_type(conds.loc[n], tuple(checkpoints)) for n in names)
    common = dict(loglik=L, yes_option=np.zeros(I, dtype=np.int64), matching_option=matching,
                  prior_weights=personas.prior_weights, item_trait=tuple(str(t) for t in probes.trait[tidx]),
                  profile_similarity=profile_similarity(L.values, matching),
                  surface_similarity=surface_kernel(surface, item_ids))

    def dataset(kinds: tuple[str, ...], tail: tuple[str, ...] = (), carry: tuple[str, ...] = ()
                ) -> tuple[Any, pd.DataFrame]:
        """Conditions of ``kinds + tail + carry``; measurements of ``kinds``, then of ``tail``."""
        rows = pd.concat([all_rows[all_rows["kind"].isin(kinds)], all_rows[all_rows["kind"].isin(tail)]],
                         ignore_index=True)
        keep = [c for c, n in enumerate(names) if conds.loc[n, "kind"] in kinds + tail + carry]
        sub = [names[c] for c in keep]
        data = SelectionData(conditions=tuple(sub), condition_type=tuple(ctype[c] for c in keep),
                             sft_evidence=sft_ev[keep], icl_evidence=icl_ev[keep],
                             measurement_condition=np.array([sub.index(x) for x in rows["condition"]]),
                             measurement_item=np.array([col[x] for x in rows["item_id"]]),
                             logodds=rows["logodds"].to_numpy(float), **common)
        return data, rows

    # the joint data carry the cross conditions without their measurements, so that a joint fit has every
    # cross condition's Yes offset (from its prior: a new type) and predicts the cross rows of ``cross``
    n_cross = int((all_rows["kind"] == "cross").sum())
    out = {"icl": dataset(("base", "icl")), "sft": dataset(("base", "sft")),
           "joint": dataset(("base", "icl", "sft"), carry=("cross",) if n_cross else ())}
    cross = dataset(("base", "icl", "sft"), ("cross",)) if n_cross else (None, None)
    rows = {k: v[1] for k, v in out.items()}
    rows["cross"] = cross[1]
    return Datasets(out["icl"][0], out["sft"][0], out["joint"][0], cross[0], n_cross, rows)
