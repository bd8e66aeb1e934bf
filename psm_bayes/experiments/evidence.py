"""From measurements to the models' data: one :class:`~psm_bayes.models.selection.SelectionData` per comparison.

Every model and null of the persona-selection family sees the same object:
the persona table ``L`` (normalised over Yes/No) on every table item, the
pre-training prior ``pi`` (EM on the prior items), the evidence count
tensors of each condition -- ``icl_evidence[c, i, o]`` (shots of condition
``c`` answering item ``i`` with option ``o``) and ``sft_evidence[c, i, o]``
(how many times fine-tuning trained on item ``i`` with answer ``o`` up to
the condition's checkpoint) -- item traits, an item similarity matrix, and
the observed log-odds of the matching answer per (condition, evaluation item).

Condition types (one Yes offset ``response_bias`` each, so a response bias
that grows with the number of shots or fine-tuning steps is absorbed by
every model alike): ``base`` (no evidence, the reference), ``icl-n<n>``,
``sft-k<step>``; the cross conditions (fine-tuned, then opposite-pole shots)
take the type of the last SFT checkpoint.

Similarity: the cosine similarity of two items' centred matching log-odds
profiles across the personas of the table (items the personas answer alike
are similar), which the ``similarity`` null uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

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
        ``base`` + ICL + SFT conditions (fitted for the cross-prediction).
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


def item_similarity(loglik: np.ndarray, matching: np.ndarray) -> np.ndarray:
    """Cosine similarity of items' centred matching log-odds profiles across personas, ``(item, item)``."""
    rows = np.arange(loglik.shape[1])
    lo = loglik[:, rows, matching] - loglik[:, rows, 1 - matching]     # (persona, item)
    z = lo - lo.mean(0, keepdims=True)
    norm = np.linalg.norm(z, axis=0)
    z = z / np.where(norm > 0, norm, 1.0)
    return np.clip(z.T @ z, -1.0, 1.0)


def _condition_type(row: pd.Series, last_step: int) -> str:
    if row["kind"] == "base":
        return "base"
    if row["kind"] == "icl":
        return f"icl-n{int(row['n_shots'])}"
    return f"sft-k{int(row['step']) if row['kind'] == 'sft' else last_step}"


def build_datasets(design: Design, personas: Any, icl: Any, sft: Any, checkpoints: tuple[int, ...]) -> Datasets:
    """The :class:`Datasets` of one language model's stages.

    Parameters
    ----------
    design : Design
    personas : PersonaStage
    icl : ICLStage
    sft : SFTStage
    checkpoints : tuple of int
        The SFT checkpoints (the last gives the cross conditions' type).
    """
    from psm_bayes.models.selection import SelectionData

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
    sft_cols = np.array([col[probes.items.ids[i]] for i in design.sft_train])
    for c, name in enumerate(names):
        r = conds.loc[name]
        if r["kind"] == "icl" or r["kind"] == "cross":
            trait = r["shot_trait"] if r["kind"] == "icl" else design.sft_trait
            pole = r["pole"] if r["kind"] == "icl" else ("-" if r["pole"] == "+" else "+")
            s = seqs[(trait, int(r["ordering"]))]
            n = int(r["n_shots"])
            for i, a in zip(s.items[:n], s.answers(pole)[:n]):
                icl_ev[c, col[probes.items.ids[i]], a] += 1
        if r["kind"] in ("sft", "cross"):
            seen = sft.evidence[(r["pole"], int(r["seed"]), int(r["step"]))]
            m = probes.matching_option[design.sft_train]
            ans = m if r["pole"] == "+" else 1 - m
            np.add.at(sft_ev[c], (sft_cols, ans), seen)
    ctype = tuple(_condition_type(conds.loc[n], checkpoints[-1]) for n in names)
    common = dict(loglik=L, yes_option=np.zeros(I, dtype=np.int64), matching_option=matching,
                  prior_weights=personas.prior_weights, item_trait=tuple(str(t) for t in probes.trait[tidx]),
                  similarity=item_similarity(L.values, matching))

    def dataset(kinds: tuple[str, ...], tail: tuple[str, ...] = ()) -> tuple[Any, pd.DataFrame]:
        rows = pd.concat([all_rows[all_rows["kind"].isin(kinds)], all_rows[all_rows["kind"].isin(tail)]],
                         ignore_index=True)
        keep = [c for c, n in enumerate(names) if conds.loc[n, "kind"] in kinds + tail]
        sub = [names[c] for c in keep]
        data = SelectionData(conditions=tuple(sub), condition_type=tuple(ctype[c] for c in keep),
                             sft_evidence=sft_ev[keep], icl_evidence=icl_ev[keep],
                             measurement_condition=np.array([sub.index(x) for x in rows["condition"]]),
                             measurement_item=np.array([col[x] for x in rows["item_id"]]),
                             logodds=rows["logodds"].to_numpy(float), **common)
        return data, rows

    out = {}
    for name, kinds in (("icl", ("base", "icl")), ("sft", ("base", "sft")), ("joint", ("base", "icl", "sft"))):
        out[name] = dataset(kinds)
    n_cross = int((all_rows["kind"] == "cross").sum())
    cross = dataset(("base", "icl", "sft"), ("cross",)) if n_cross else (None, None)
    rows = {k: v[1] for k, v in out.items()}
    rows["cross"] = cross[1]
    return Datasets(out["icl"][0], out["sft"][0], out["joint"][0], cross[0], n_cross, rows)
