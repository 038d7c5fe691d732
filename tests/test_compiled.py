"""The Cython-compiled simulation core (setup.py, muxsim/_native.py) gives exactly what its
pure-Python source gives, and a stale extension never runs.

The same cases run in two fresh processes, one as installed (compiled) and one with
``MUXSIM_PURE_PYTHON=1``: every strategy, with preemptions, a drain limit, the job-overhead
model, a device speed trace, a timeline window, and event by event. Request tables, job logs,
job counts, end times and inter-token-latency histograms must be equal to the bit.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from muxsim import _native

ROOT = Path(__file__).resolve().parents[1]
COMPILED = all(v == "compiled" for v in _native.status().values())


def _cases():
    """(label, spec, simulate kwargs) of the comparison, built from tests/test_decode_runs.py's
    helpers (imported here so that the subprocesses build the same objects)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_decode_runs as d

    from muxsim.config import SchedulerConfig
    from muxsim.core.strategies import STRATEGIES

    wl = d._workload(3, 3, 400, 15.0)
    tight = SchedulerConfig(activation_reserve_gib=14.0)  # a small KV pool: preemptions

    def slow(name, t):
        return 1.25 if 4.0 <= t < 9.0 else 1.0

    out = []
    for s in (s for s in STRATEGIES if s != "muxserve+sim"):
        out.append((f"{s}", d._spec(d._one_mesh(), s, wl, d.LAT), {}))
        out.append((f"{s}-preempt", d._spec(d._one_mesh(), s, wl, d.LAT, tight), {}))
        out.append((f"{s}-drain-overhead", d._spec(d._one_mesh(), s, wl, d.OVERHEAD, drain=4.0), {}))
        out.append((f"{s}-speed", d._spec(d._one_mesh(), s, wl, d.LAT), {"speed": slow}))
        out.append((f"{s}-timeline", d._spec(d._one_mesh(), s, wl, d.LAT), {"timeline": (2.0, 6.0)}))
        out.append((f"{s}-events", d._spec(d._one_mesh(), s, wl, d.LAT, tight),
                    {"fast_forward": False, "fuse_decodes": False}))
    return out


def _dump(path: str) -> None:
    """Run every case and pickle what it gave (called in the subprocesses)."""
    from muxsim.sim.driver import simulate

    res = {}
    for label, spec, kw in _cases():
        r = simulate(spec, **kw)
        itl = {k: (h.n, h.mean_s, h.m2_s2, h.min_s, h.max_s, h.bins.tolist(), h.counts.tolist())
               for k, h in r.itl.items()}
        res[label] = (r.requests, r.jobs, r.n_jobs, r.n_completions, r.sim_time_s, itl)
    res["_status"] = _native.status()
    Path(path).write_bytes(pickle.dumps(res))


def _run(tmp_path: Path, pure: bool) -> dict:
    out = tmp_path / ("pure.pkl" if pure else "compiled.pkl")
    env = {**os.environ, "MUXSIM_PURE_PYTHON": "1" if pure else ""}
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_compiled; test_compiled._dump({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
    return pickle.loads(out.read_bytes())


@pytest.mark.skipif(not COMPILED and not os.environ.get("CI"),
                    reason=f"the simulation core is not compiled here ({_native.status()}); "
                           "pip install -e . with Cython and a C compiler builds it")
def test_compiled_core_equals_pure_python(tmp_path):
    assert COMPILED, f"CI must run the compiled core: {_native.status()}"
    got = _run(tmp_path, pure=False)
    ref = _run(tmp_path, pure=True)
    assert set(got.pop("_status").values()) == {"compiled"}
    assert all(v.startswith("python") for v in ref.pop("_status").values())
    assert got.keys() == ref.keys()
    for label in ref:
        a, b = got[label], ref[label]
        pd.testing.assert_frame_equal(a[0], b[0], check_exact=True, obj=label)
        if b[1] is None:
            assert a[1] is None
        else:
            pd.testing.assert_frame_equal(a[1], b[1], check_exact=True, obj=label)
        assert a[2:5] == b[2:5], label
        np.testing.assert_equal(a[5], b[5], err_msg=label)  # NaN (an LLM without gaps) equals NaN
    # the cases exercise what they claim
    assert (ref["muxserve-preempt"][0]["preemptions"] > 0).any()
    assert len(ref["muxserve-timeline"][1]) > 0
    assert ref["spatial-events"][3] == ref["spatial-events"][2]


def test_stale_or_unrecorded_extensions_give_way_to_their_source(tmp_path):
    """decide() loads the .py of a module whose source changed since it was compiled, or that the
    build did not record, and of every module when pure Python is asked for."""
    import hashlib
    from importlib.machinery import EXTENSION_SUFFIXES

    mods = _native.COMPILED[:3]
    built = {}
    for i, mod in enumerate(mods):
        base = tmp_path / mod.replace(".", "/")
        base.parent.mkdir(parents=True, exist_ok=True)
        src = base.with_suffix(".py")
        src.write_text(f"X = {i}\n")
        (base.parent / (base.name + EXTENSION_SUFFIXES[0])).write_bytes(b"")
        built[mod] = hashlib.sha256(src.read_bytes()).hexdigest()
    fresh, edited, unrecorded = mods
    (tmp_path / edited.replace(".", "/")).with_suffix(".py").write_text("X = 99\n")
    del built[unrecorded]
    status, force, stale = _native.decide(tmp_path, built, pure=False)
    assert status[fresh] == "compiled"
    assert force == {edited, unrecorded} and sorted(stale) == sorted([edited, unrecorded])
    assert all(status[m] == "python (not compiled)" for m in _native.COMPILED[3:])
    status, force, stale = _native.decide(tmp_path, built, pure=True)
    assert force == set(mods) and not stale
    assert np.unique([status[m] for m in mods]).tolist() == ["python (MUXSIM_PURE_PYTHON)"]


def test_pure_python_switch_loads_the_sources():
    code = ("import muxsim, muxsim.core.llm as l, muxsim.sim.driver as d; "
            "print(l.__file__.endswith('.py'), d.__file__.endswith('.py'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "MUXSIM_PURE_PYTHON": "1"}).stdout.split()
    assert out == ["True", "True"]
