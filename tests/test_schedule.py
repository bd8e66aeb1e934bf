"""The parallel schedule (LoRA SFT in a spawned second process) gives exactly the serial results.

The worker loads its own float32 Gemma from the on-disk model cache, with one torch thread, and runs the
same stage code; the main process runs the stage itself. Every number must be identical (not close): the
schedule may change wall time, never a result. The comparison is shown to be sensitive: a run that differs
only in its learning rate (0.1% higher) does not compare equal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from psm_bayes.experiments.schedule import BackgroundSFT, resolve_schedule, usable_cores


def test_resolve_schedule():
    assert resolve_schedule("serial", "cpu", True) == "serial"
    assert resolve_schedule("parallel", "cuda", False) == "parallel"
    assert resolve_schedule("auto", "cuda", True) == "serial"                 # one GPU: no second process
    assert resolve_schedule("auto", "cpu", False) == "serial"                 # models handed in by the caller
    assert resolve_schedule("auto", "cpu", True) == ("parallel" if usable_cores() >= 2 else "serial")
    with pytest.raises(ValueError, match="^schedule: expected one of"):
        resolve_schedule("threads", "cpu", True)


def _same(a, b) -> bool:
    """Every table, count and loss of two SFT stages identical."""
    try:
        pd.testing.assert_frame_equal(a.measurements, b.measurements, check_exact=True)
        pd.testing.assert_frame_equal(a.trained_measurements, b.trained_measurements, check_exact=True)
    except AssertionError:
        return False
    return (a.evidence.keys() == b.evidence.keys()
            and all(np.array_equal(a.evidence[k], b.evidence[k]) for k in a.evidence)
            and a.losses == b.losses)


@pytest.mark.llm
def test_sft_in_a_second_process_equals_the_serial_stage(gemma, tmp_path):
    from dataclasses import replace

    from psm_bayes.experiments.config import TINY, ExperimentConfig
    from psm_bayes.experiments.design import make_design
    from psm_bayes.experiments.measure import finetune, screening

    cfg = ExperimentConfig.quick(**TINY, dtype="float32")
    source = screening.probe_source(None, cfg.traits)
    design = make_design(cfg, source.probes, cfg.traits)
    serial = finetune.run_sft(gemma, design, cfg.sft, cfg.sft_checkpoints, cache_dir=tmp_path / "serial",
                              batch_size=cfg.batch_size, progress=False)
    job = BackgroundSFT("gemma3-270m", 1, "cpu", design, cfg.sft, cfg.sft_checkpoints, tmp_path / "worker",
                        cfg.batch_size)
    parallel, seconds = job.result()
    assert seconds > 0 and parallel.info["runs_trained"] == serial.info["runs_trained"] > 0
    assert len(parallel.measurements) == len(serial.measurements) > 0
    assert _same(serial, parallel)
    # the comparison can fail: the same stage with a learning rate 0.1% higher (same conditions) is not equal
    other = finetune.run_sft(gemma, design, replace(cfg.sft, lr=cfg.sft.lr * 1.001), cfg.sft_checkpoints,
                             cache_dir=tmp_path / "other", batch_size=cfg.batch_size, progress=False)
    assert not _same(serial, other)
