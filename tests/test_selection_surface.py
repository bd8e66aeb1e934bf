"""The ``surface_similarity`` null's statement-text features (psm_bayes.experiments.measure.surface).

* The projection: each feature column's residual on the centred Yes/No sign
  is uncorrelated with it; a kernel built from the sign itself fails the
  |r| < 0.2 bound, so the bound can fail.
* On the real default model (Gemma 3 270M, shipped probes of 2 traits, 40
  label-balanced statements): the projected features do not correlate with
  the matching answer's Yes/No sign (|r| < 0.2 for the kernel's pairs and its
  leading eigenvector, 0 for every feature column), while the unprojected
  features correlate more: a column beyond the bound, a leading eigenvector
  closer to the sign (measured numbers in the test).
"""

from __future__ import annotations

import numpy as np
import pytest

from psm_bayes.experiments.measure.surface import cosine_similarity, project_out, sign_correlation

BOUND = 0.2


def test_projection_removes_the_sign_and_the_bound_can_fail():
    rng = np.random.default_rng(0)
    sign = np.repeat([1.0, -1.0], [30, 20])                      # unbalanced: the sign is centred first
    x = rng.normal(size=(50, 16)) + np.outer(sign, rng.normal(size=16))     # features that encode the sign
    raw = sign_correlation(cosine_similarity(x - x.mean(0)), sign)
    assert raw["pairs"] > 0.5 and raw["leading"] > 0.9             # a sign kernel: fails the bound
    r = project_out(x, sign)
    assert np.abs(r.T @ (sign - sign.mean())).max() < 1e-9 and np.abs(r.mean(0)).max() < 1e-12
    proj = sign_correlation(cosine_similarity(r), sign)
    assert abs(proj["pairs"]) < BOUND and proj["leading"] < BOUND
    # the residual keeps everything else: the part of x orthogonal to [1, sign] is unchanged
    basis = np.linalg.qr(np.stack([np.ones(50), sign], 1))[0]
    np.testing.assert_allclose(r, x - basis @ (basis.T @ x), atol=1e-10)


@pytest.mark.llm
def test_real_model_features_do_not_encode_the_yes_no_sign(gemma, tmp_path):
    from psm_bayes.experiments.measure.surface import surface_features
    from psm_bayes.probes import load_probes

    probes = load_probes(("honesty", "humour"))
    items = np.concatenate([np.flatnonzero((probes.trait == t) & (probes.matching_option == m))[:10]
                            for t in ("honesty", "humour") for m in (0, 1)])
    st = surface_features(gemma, probes, items, cache_dir=tmp_path, batch_size=20)
    assert st.similarity.shape == (40, 40) and st.hidden.shape[0] == 40
    r = st.sign_correlations()
    proj, raw = r["projected"], r["raw"]
    assert abs(proj["pairs"]) < BOUND and proj["leading"] < BOUND, r
    s = st.sign - st.sign.mean()
    per_column = lambda f: np.abs((f - f.mean(0)).T @ s) / (np.linalg.norm(f - f.mean(0), axis=0)  # noqa: E731
                                                          * np.linalg.norm(s) + 1e-30)
    assert per_column(st.features).max() < 1e-8
    # the unprojected hidden states correlate more: a feature column beyond the bound, a leading eigenvector
    # closer to the sign (measured: column max 0.5+, leading 0.028 vs 0.008). The pairs statistic is no
    # comparison at 20 statements per sign: the projection subtracts each sign group's mean, which makes
    # same-sign pairs slightly less alike, O(1 / group size) (measured -0.16 here, raw -0.04; on the 800
    # statements of 4 traits -0.009, raw 0.018)
    assert raw["leading"] > proj["leading"], r
    assert per_column(st.hidden).max() > BOUND
    # statements of one trait are more alike than statements of two: the kernel is about the text
    same = probes.trait[items][:, None] == probes.trait[items][None, :]
    off = ~np.eye(40, dtype=bool)
    assert st.similarity[same & off].mean() > st.similarity[~same].mean()
    # the cache: a second call reads the same hidden states
    again = surface_features(gemma, probes, items, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.hidden, st.hidden)
