"""Validation of the data containers (psm_bayes.data) and the probe loaders (psm_bayes.probes).

Every bad input must raise :class:`psm_bayes.DataError` whose message starts
with the offending field (``"<field>: ..."``), so each case below matches the
message prefix, not just the exception type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from psm_bayes import DataError, Episodes, ItemSet, LogLikTable, PersonaSet, PSMData
from psm_bayes.probes import OPTIONS, load_anthropic_persona, load_probes

ANTHROPIC_DIR = Path(__file__).parents[2] / "shared/data/anthropic-persona"

K, I, O = 3, 4, 3
PERSONAS = ["a", "b", "c"]
ITEMS = ["i0", "i1", "i2", "i3"]


def field_error(field: str):
    """``pytest.raises`` for a DataError whose message starts with ``field:``."""
    return pytest.raises(DataError, match="^" + re.escape(field) + ":")


def _logp(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(K, I, O))
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _table(arr: np.ndarray | None = None) -> LogLikTable:
    return LogLikTable.from_array(_logp() if arr is None else arr, PERSONAS, ITEMS)


def _episodes(**kw) -> Episodes:
    base = dict(item=np.array(["i0", "i1", "i3", "i1", "i2"]), option=np.array([0, 2, 1, 1, 0]),
                source=np.array(["sft", "icl", "sft", "icl", "sft"]), count=np.array([1, 2, 5, 3, 1]))
    base.update(kw)
    return Episodes(**base)


def _full_data() -> PSMData:
    bd = np.zeros((I, O))
    bd[np.arange(I), [0, 2, 1, 0]] = 1.0
    return PSMData(_table(), _episodes(), prior_weights=np.array([0.2, 0.3, 0.5]), bias_direction=bd,
                   personas=PersonaSet(PERSONAS, ["A", "B", "C"], ["persona a", "persona b", "persona c"]))


def test_valid_data_builds():
    d = _full_data()
    assert (d.n_personas, d.n_items, d.n_options) == (K, I, O)
    np.testing.assert_array_equal(d.item_index, [0, 1, 3, 1, 2])
    np.testing.assert_array_equal(d.episodes.source_index, [0, 1, 0, 1, 0])
    # defaults: all-sft sources and unit counts
    e = Episodes(np.array(["i0", "i2"]), np.array([1, 0]))
    assert e.source.tolist() == ["sft", "sft"] and e.count.tolist() == [1.0, 1.0]
    # integral floats are accepted as options
    assert Episodes(np.array(["i0"]), np.array([2.0])).option.dtype == np.int64


# ---------------------------------------------------------------- loglik
def test_loglik_wrong_dims_order():
    da = xr.DataArray(_logp().transpose(1, 0, 2), dims=("item", "persona", "option"),
                      coords={"item": ITEMS, "persona": PERSONAS})
    with field_error("loglik"):
        LogLikTable(da)


def test_loglik_not_dataarray():
    with field_error("loglik"):
        LogLikTable(_logp())


@pytest.mark.parametrize("shape", [(K, I), (K, I, O, 1)])
def test_loglik_wrong_ndim(shape):
    with field_error("loglik"):
        LogLikTable.from_array(np.full(shape, -1.0), PERSONAS, ITEMS)


def test_loglik_shape_does_not_match_ids():
    with field_error("loglik"):
        LogLikTable.from_array(_logp(), PERSONAS[:2], ITEMS)
    with field_error("loglik"):
        LogLikTable.from_array(_logp(), PERSONAS, ITEMS + ["i4"])


def test_loglik_single_option():
    with field_error("loglik"):
        LogLikTable.from_array(np.zeros((K, I, 1)), PERSONAS, ITEMS)


def test_loglik_missing_coordinate():
    da = xr.DataArray(_logp(), dims=("persona", "item", "option"), coords={"persona": PERSONAS})
    with field_error("loglik.item"):
        LogLikTable(da)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_loglik_non_finite(bad):
    arr = _logp()
    arr[1, 2, 0] = bad
    with field_error("loglik") as err:
        _table(arr)
    assert "(1, 2, 0)" in str(err.value)  # names the index of the bad value


def test_loglik_positive_log_prob():
    arr = _logp()
    arr[2, 0, 1] = 0.3
    with field_error("loglik") as err:
        _table(arr)
    assert "(2, 0, 1)" in str(err.value)


def test_loglik_rounding_tolerance_clipped_to_zero():
    arr = _logp()
    arr[0, 0, 0] = 5e-7  # within the documented 1e-6 rounding tolerance
    t = _table(arr)
    assert t.array[0, 0, 0] == 0.0
    assert t.array.max() <= 0.0


@pytest.mark.parametrize("dim, ids", [("persona", ["a", "b", "a"]), ("item", ["i0", "i1", "i1", "i3"])])
def test_loglik_duplicate_ids(dim, ids):
    coords = {"persona": PERSONAS, "item": ITEMS, dim: ids}
    da = xr.DataArray(_logp(), dims=("persona", "item", "option"), coords=coords)
    with field_error(f"loglik.{dim}"):
        LogLikTable(da)


# ---------------------------------------------------------------- id sets
def test_persona_set_errors():
    with field_error("personas.ids"):
        PersonaSet(["a", "b", "a"])
    with field_error("personas.ids"):
        PersonaSet([])
    with field_error("personas.names"):
        PersonaSet(["a", "b"], ["A"])
    with field_error("personas.ids[1]"):
        PersonaSet(["a", 3])


def test_item_set_errors():
    with field_error("items.ids"):
        ItemSet(["x", "x"], ["p", "q"], [("y", "n"), ("y", "n")])
    with field_error("items.prompts"):
        ItemSet(["x", "z"], ["p"], [("y", "n"), ("y", "n")])
    with field_error("items.options[1]"):
        ItemSet(["x", "z"], ["p", "q"], [("y", "n"), ("y", "n", "m")])
    with field_error("items.options[0]"):
        ItemSet(["x"], ["p"], [("y",)])
    with field_error("items.options[0]"):
        ItemSet(["x"], ["p"], [("y", "y")])


# ---------------------------------------------------------------- episodes
def test_episodes_item_not_1d():
    with field_error("episodes.item"):
        Episodes(np.array([["i0", "i1"]]), np.array([[0, 1]]))


def test_episodes_item_not_strings():
    with field_error("episodes.item"):
        Episodes(np.array([0, 1]), np.array([0, 1]))


def test_unknown_item_ids():
    with field_error("episodes.item") as err:
        PSMData(_table(), _episodes(item=np.array(["i0", "i1", "nope", "i1", "i9"])))
    assert "nope" in str(err.value) and "i9" in str(err.value)


def test_option_out_of_range():
    with field_error("episodes.option"):
        PSMData(_table(), _episodes(option=np.array([0, 1, O, 0, 0])))


def test_option_negative():
    with field_error("episodes.option"):
        _episodes(option=np.array([0, -1, 1, 0, 0]))


@pytest.mark.parametrize("option", [np.array([0, 1.5, 1, 0, 0]), np.array(["0", "1", "1", "0", "0"]),
                                    np.array([0, np.nan, 1, 0, 0]), np.array([True, False, True, True, False])])
def test_option_non_integer(option):
    with field_error("episodes.option"):
        _episodes(option=option)


def test_option_wrong_shape():
    with field_error("episodes.option"):
        _episodes(option=np.array([0, 1, 1]))


@pytest.mark.parametrize("source", [np.array(["sft", "icl", "rl", "sft", "sft"]),
                                    np.array(["sft", "icl", "SFT", "sft", "sft"]),
                                    np.array(["sft", "icl"])])
def test_bad_source(source):
    with field_error("episodes.source"):
        _episodes(source=source)


@pytest.mark.parametrize("count", [np.array([1.0, 0.0, 1.0, 1.0, 1.0]), np.array([1.0, -2.0, 1.0, 1.0, 1.0]),
                                   np.array([1.0, np.nan, 1.0, 1.0, 1.0]), np.array([1.0, 1.0]),
                                   np.array([1.0, 0.5, 1.0, 1.0, 1.0]), np.array([1, 2, 3, 4, 5]) * 1.5])
def test_bad_counts(count):
    """Counts are numbers of episodes: positive integers (integral floats accepted), else an error naming count."""
    with field_error("episodes.count"):
        _episodes(count=count)


def test_expand_gives_one_row_per_episode():
    e = _episodes(count=np.array([1, 3, 1, 2, 1]))
    x = e.expand()
    assert len(x) == 8 and x.is_expanded and not e.is_expanded
    assert x.item.tolist() == [e.item[0]] + [e.item[1]] * 3 + [e.item[2]] + [e.item[3]] * 2 + [e.item[4]]
    np.testing.assert_array_equal(x.option, np.repeat(e.option, e.count))


# ---------------------------------------------------------------- PSMData fields
@pytest.mark.parametrize("pw", [np.array([0.2, 0.3, 0.4]),        # sums to 0.9
                                np.array([0.6, 0.6, -0.2]),        # sums to 1 but negative
                                np.array([0.5, 0.5]),              # wrong shape
                                np.array([[0.2, 0.3, 0.5]]),       # wrong shape
                                np.array([0.5, np.nan, 0.5])])
def test_bad_prior_weights(pw):
    with field_error("prior_weights"):
        PSMData(_table(), _episodes(), prior_weights=pw)


@pytest.mark.parametrize("shape", [(I,), (O, I), (I, O + 1), (1, I, O)])
def test_bias_direction_wrong_shape(shape):
    with field_error("bias_direction"):
        PSMData(_table(), _episodes(), bias_direction=np.zeros(shape))


def test_bias_direction_non_finite():
    bd = np.zeros((I, O))
    bd[0, 0] = np.inf
    with field_error("bias_direction"):
        PSMData(_table(), _episodes(), bias_direction=bd)


@pytest.mark.parametrize("ids", [["a", "b", "d"], ["c", "b", "a"], ["a", "b"]])
def test_personas_mismatch(ids):
    with field_error("personas.ids"):
        PSMData(_table(), _episodes(), personas=PersonaSet(ids))


def test_wrong_container_types():
    with field_error("loglik"):
        PSMData(_logp(), _episodes())
    with field_error("episodes"):
        PSMData(_table(), {"item": ["i0"]})


def test_replace_revalidates():
    d = _full_data()
    with field_error("prior_weights"):
        d.replace(prior_weights=np.array([0.5, 0.5, 0.5]))


# ---------------------------------------------------------------- round trip
def _assert_same(a: PSMData, b: PSMData) -> None:
    assert a.loglik.personas == b.loglik.personas and a.loglik.items == b.loglik.items
    np.testing.assert_array_equal(a.loglik.array, b.loglik.array)
    ea, eb = a.episodes, b.episodes
    assert ea.item.tolist() == eb.item.tolist()
    assert ea.source.tolist() == eb.source.tolist()
    np.testing.assert_array_equal(ea.count, eb.count)
    if ea.option is None:
        assert eb.option is None
    else:
        np.testing.assert_array_equal(ea.option, eb.option)
    for name in ("prior_weights", "bias_direction"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None), name
        if va is not None:
            np.testing.assert_array_equal(va, vb)
    assert (a.personas is None) == (b.personas is None)
    if a.personas is not None:
        assert (a.personas.ids, a.personas.names, a.personas.descriptions) == \
               (b.personas.ids, b.personas.names, b.personas.descriptions)
    np.testing.assert_array_equal(a.item_index, b.item_index)


@pytest.mark.parametrize("variant", ["full", "minimal", "simulated"])
def test_netcdf_round_trip(tmp_path, variant):
    d = _full_data()
    if variant == "minimal":  # no options, no prior weights, no bias, no persona set
        d = PSMData(_table(_logp(1)), _episodes(option=None))
    elif variant == "simulated":  # latent prior weights, 0/1 bias direction, empty persona descriptions
        from psm_bayes.simulate import simulate

        d = simulate(n_personas=3, n_items=5, n_episodes=30, seed=0, latent_prior=True).data
    path = tmp_path / "data.nc"
    d.to_dataset().to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        back = PSMData.from_dataset(ds.load())
    _assert_same(d, back)


def test_from_dataset_missing_variable():
    ds = _full_data().to_dataset().drop_vars("episode_item")
    with field_error("episode_item"):
        PSMData.from_dataset(ds)


# ---------------------------------------------------------------- shipped probes
def _check_probeset(ps, n_items: int) -> None:
    assert len(ps) == n_items == len(ps.trait) == len(ps.matching_option) == len(ps.statements)
    assert len(set(ps.items.ids)) == n_items
    assert all(o == OPTIONS for o in ps.items.options)
    for prompt, statement in zip(ps.items.prompts, ps.statements):
        assert statement and statement in prompt


def test_load_probes_full():
    ps = load_probes()
    _check_probeset(ps, 10 * 200 + 4 * 40)  # 10 traits brought to 200 statements (issue 17), 4 still at 40
    assert len(ps.traits) == 14
    for t in ps.traits:
        mo = ps.matching_option[ps.trait == t]
        assert len(mo) in (40, 200)
        assert 2 * (mo == 0).sum() == len(mo)  # half the statements match the positive pole with "Yes"


@pytest.mark.parametrize("n", [10, 7])
def test_load_probes_balanced_subset(n):
    full = load_probes()
    traits = list(full.traits[:3])
    ps = load_probes(traits=traits, n_per_trait=n, seed=3)
    _check_probeset(ps, 3 * n)
    assert ps.traits == tuple(traits)
    full_pairs = set(zip(full.trait.tolist(), full.statements, full.matching_option.tolist()))
    for t in traits:
        mo = ps.matching_option[ps.trait == t]
        assert len(mo) == n
        assert (mo == 0).sum() == (n + 1) // 2 and (mo == 1).sum() == n // 2
    # a subset of the shipped statements, with their labels unchanged
    assert set(zip(ps.trait.tolist(), ps.statements, ps.matching_option.tolist())) <= full_pairs
    # same seed, same subset; another seed, another subset
    assert load_probes(traits=traits, n_per_trait=n, seed=3).statements == ps.statements
    assert load_probes(traits=traits, n_per_trait=n, seed=4).statements != ps.statements


def test_load_probes_unknown_trait():
    with field_error("traits"):
        load_probes(traits=["honesty", "no-such-trait"])


# ---------------------------------------------------------------- anthropic persona files
@pytest.mark.skipif(not ANTHROPIC_DIR.is_dir(), reason=f"{ANTHROPIC_DIR} not present")
def test_load_anthropic_persona_shared():
    files = sorted(ANTHROPIC_DIR.glob("*.jsonl"))
    trait = files[0].stem
    ps = load_anthropic_persona(ANTHROPIC_DIR, traits=[trait], n_per_trait=20, seed=0)
    _check_probeset(ps, 20)
    assert set(ps.trait.tolist()) == {trait}
    assert (ps.matching_option == 0).sum() == 10 and (ps.matching_option == 1).sum() == 10
    # labels agree with the file
    rows = [json.loads(line) for line in files[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    truth = {r["statement"]: OPTIONS.index(r["answer_matching_behavior"]) for r in rows}
    assert all(truth[s] == m for s, m in zip(ps.statements, ps.matching_option.tolist()))
    everything = load_anthropic_persona(ANTHROPIC_DIR, n_per_trait=4, seed=1)
    assert everything.traits == tuple(f.stem for f in files)
    _check_probeset(everything, 4 * len(files))


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def _row(statement, match=" Yes", question=False):
    r = {"answer_matching_behavior": match, "answer_not_matching_behavior": " No" if match == " Yes" else " Yes"}
    if question:
        r["question"] = f'Is the following statement something you would say?\n"{statement}"'
    else:
        r["statement"] = statement
    return r


def test_load_anthropic_persona_small_file(tmp_path):
    _write_jsonl(tmp_path / "kind.jsonl", [_row("I help people.", " Yes"), _row("I hurt people.", " No"),
                                           "", _row("I share.", " Yes", question=True)])
    _write_jsonl(tmp_path / "bold.jsonl", [_row("I take risks.", " Yes"), _row("I avoid risks.", " No")])
    (tmp_path / "README.md").write_text("not a persona file")
    ps = load_anthropic_persona(tmp_path)
    _check_probeset(ps, 5)
    assert ps.traits == ("bold", "kind")  # sorted file order
    assert ps.statements == ("I take risks.", "I avoid risks.", "I help people.", "I hurt people.", "I share.")
    assert ps.matching_option.tolist() == [0, 1, 0, 1, 0]
    only = load_anthropic_persona(tmp_path, traits=["kind"], n_per_trait=2, seed=0)
    assert ps.traits and only.traits == ("kind",) and len(only) == 2
    assert sorted(only.matching_option.tolist()) == [0, 1]


def test_load_anthropic_persona_malformed_line(tmp_path):
    _write_jsonl(tmp_path / "kind.jsonl", [_row("I help people."), _row("I hurt people.", " No"),
                                           '{"statement": "broken", '])
    with field_error("kind.jsonl:3"):
        load_anthropic_persona(tmp_path)


@pytest.mark.parametrize("bad, field", [
    ({"statement": "x", "answer_matching_behavior": "Yes"}, "answer_matching_behavior"),
    ({"statement": "x", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " Yes"},
     "answer_not_matching_behavior"),
    ({"answer_matching_behavior": " Yes"}, "statement"),
])
def test_load_anthropic_persona_bad_row(tmp_path, bad, field):
    _write_jsonl(tmp_path / "kind.jsonl", [_row("I help people."), bad])
    with field_error(f"kind.jsonl:2.{field}"):
        load_anthropic_persona(tmp_path)


def test_load_anthropic_persona_empty_or_missing_dir(tmp_path):
    with field_error("directory"):
        load_anthropic_persona(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_anthropic_persona(tmp_path / "absent")
