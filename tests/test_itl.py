"""Inter-token latencies: the histogram against NumPy on the values themselves, and the
simulator's recorded gaps against every request's token times observed one by one."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from test_decode_runs import LAT, _one_mesh, _spec, _workload

from muxsim import _native
from muxsim.config import SchedulerConfig
from muxsim.core.itl import ITLHistogram, ITLRecorder
from muxsim.core.llm import LLMRuntime
from muxsim.core.strategies import STRATEGIES
from muxsim.sim.driver import simulate

_COMPILED_LLM = _native.status()["muxsim.core.llm"] == "compiled"

# a percentile read at a bin midpoint: half a bin (2 ** -9 = 0.195 % of its values) at most
REL = 2.0 ** -10 + 1e-12


def _exact(values, weights):
    return np.repeat(np.asarray(values, dtype=float), np.asarray(weights))


def test_histogram_moments_are_exact_and_percentiles_within_half_a_bin():
    rng = np.random.default_rng(3)
    g = rng.lognormal(mean=-4, sigma=1.2, size=5000)
    w = rng.integers(1, 40, size=5000)
    h = ITLHistogram()
    h.add(g[:2000], w[:2000])
    h.add(g[2000:], w[2000:])
    x = _exact(g, w)
    assert h.n == len(x)
    assert h.mean_ms() == pytest.approx(x.mean() * 1e3, rel=1e-12)
    assert h.std_ms() == pytest.approx(x.std() * 1e3, rel=1e-9)
    assert (h.min_s, h.max_s) == (x.min(), x.max())
    for p in (0, 1, 25, 50, 90, 99, 99.9, 100):
        assert h.percentile_ms(p) == pytest.approx(np.percentile(x, p) * 1e3, rel=REL), p
    assert h.median_ms() == h.percentile_ms(50)


def test_merge_equals_adding_everything_and_survives_pickling():
    rng = np.random.default_rng(4)
    parts = [rng.uniform(0.005, 0.2, size=300) for _ in range(3)]
    hs = []
    for p in parts:
        h = ITLHistogram()
        h.add(p, 2)
        hs.append(h)
    m = ITLHistogram.merge(hs + [ITLHistogram()])
    one = ITLHistogram()
    one.add(np.concatenate(parts), 2)
    np.testing.assert_array_equal(m.bins, one.bins)
    np.testing.assert_array_equal(m.counts, one.counts)
    assert m.n == one.n == 1800
    assert m.mean_s == pytest.approx(one.mean_s, rel=1e-12)
    assert m.std_ms() == pytest.approx(one.std_ms(), rel=1e-9)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.counts, m.counts)
    assert (back.n, back.mean_s, back.m2_s2) == (m.n, m.mean_s, m.m2_s2)


def test_empty_histogram_and_bad_input():
    h = ITLHistogram()
    assert np.isnan(h.mean_ms()) and np.isnan(h.std_ms()) and np.isnan(h.percentile_ms(50))
    with pytest.raises(ValueError, match="finite"):
        h.add([0.1, np.nan])
    with pytest.raises(ValueError, match="weights"):
        h.add([0.1], [-1])
    with pytest.raises(ValueError, match="p must be"):
        h.percentile_ms(101)


def test_recorder_buffers_and_folds_per_llm():
    rec = ITLRecorder(2, fold_at=7)
    rec.gap(0, 0.01, 3)
    rec.chain(1, [1.0, 1.02, 1.05, 1.09], 2)
    for k in range(10):
        rec.gap(1, 0.001 * (k + 1))
    hs = rec.histograms(["a", "b"])
    assert hs["a"].n == 3 and hs["a"].mean_s == pytest.approx(0.01)
    x = np.concatenate([_exact([0.02, 0.03, 0.04], [2, 2, 2]), 0.001 * np.arange(1, 11)])
    assert hs["b"].n == len(x)
    assert hs["b"].mean_s == pytest.approx(x.mean(), rel=1e-12)


@pytest.fixture
def token_times(monkeypatch):
    """Every token of every request, observed where it is emitted: the end of each prefill
    (first token, and again after a preemption) and of each decode iteration it takes part in."""
    if _COMPILED_LLM:
        pytest.skip("LLMRuntime is compiled (its methods cannot be wrapped): these cases run in pure Python "
                    "in test_token_gaps_in_pure_python, and tests/test_compiled.py checks compiled == pure")
    times: dict[int, list[float]] = defaultdict(list)
    prefill, decode = LLMRuntime.complete_prefill, LLMRuntime.complete_decode

    def complete_prefill(self, batch, pool, now):
        for r in batch:
            times[r.idx].append(now)
        return prefill(self, batch, pool, now)

    def complete_decode(self, pool, now):
        for r in self.running.values():
            times[r.idx].append(now)
        return decode(self, pool, now)

    monkeypatch.setattr(LLMRuntime, "complete_prefill", complete_prefill)
    monkeypatch.setattr(LLMRuntime, "complete_decode", complete_decode)
    return times


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "muxserve+sim"])
@pytest.mark.parametrize("pressure", [False, True])
def test_simulated_gaps_are_every_requests_token_gaps(token_times, strategy, pressure):
    wl = _workload(5, 3, 300, 12.0, max_out=400)
    cfg = SchedulerConfig(activation_reserve_gib=14.0) if pressure else SchedulerConfig()
    res = simulate(_spec(_one_mesh(), strategy, wl, LAT, cfg), fast_forward=False, fuse_decodes=False)
    df = res.requests
    if pressure:
        assert df["preemptions"].sum() > 0
    for name, h in res.itl.items():
        ids = df.loc[df["llm"] == name, "request_id"].tolist()
        gaps = np.concatenate([np.diff(token_times[i]) for i in ids if len(token_times[i]) > 1])
        assert h.n == len(gaps), name
        assert h.mean_s == pytest.approx(gaps.mean(), rel=1e-9)
        assert h.std_ms() == pytest.approx(gaps.std() * 1e3, rel=1e-6)
        assert (h.min_s, h.max_s) == (gaps.min(), gaps.max())
        for p in (50, 90, 99):
            assert h.percentile_ms(p) == pytest.approx(np.percentile(gaps, p) * 1e3, rel=REL)
        # every finished request's gaps add up to its time from first to last token
        fin = df[(df["llm"] == name) & df["finished"]]
        assert len(fin) == len(ids)
        assert h.n == int((fin["output_tokens"] - 1).sum())
        assert h.sum_s == pytest.approx(float((fin["finish_s"] - fin["first_token_s"]).sum()), rel=1e-9)


@pytest.mark.skipif(not _COMPILED_LLM, reason="LLMRuntime runs as Python here: the cases above ran in-process")
def test_token_gaps_in_pure_python():
    """The token-gap cases above, where LLMRuntime is compiled: in a pure-Python subprocess."""
    env = {**os.environ, "MUXSIM_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "simulated_gaps_are_every_requests_token_gaps"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], env=env)
    assert out.returncode == 0, out.stdout[-3000:]
    n = len([s for s in STRATEGIES if s != "muxserve+sim"]) * 2
    assert f"{n} passed" in out.stdout, out.stdout[-1000:]
