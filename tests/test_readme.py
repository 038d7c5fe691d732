"""README.md and docs/ say what the code and data do: the calibration table is the shipped
calibration (and the latency model picks what it says), the quickstart's YAML is the file,
every file and config the docs name exists and loads, the trace-spec example synthesizes, and
the install and test commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
SHARED = ROOT.parent / "shared" / "data"


def _table_module():
    sys.path.insert(0, str(ROOT / "calibration"))
    try:
        import table
    finally:
        sys.path.pop(0)
    return table


def test_readme_calibration_table_is_the_shipped_data():
    t = _table_module()
    out = subprocess.run([sys.executable, str(ROOT / "calibration" / "table.py")], capture_output=True,
                         text=True, check=True).stdout.rstrip("\n")
    assert t.readme_block(README) == out, "run `python calibration/table.py --write`"


def test_calibration_table_says_what_the_latency_model_does():
    """Each listed (GPU, model, mesh size) gets a fitted curve; another mesh size of a listed
    model a scaled one; everything else the roofline (as the bullets under the table say)."""
    from muxsim.catalog import GPUS, MODELS
    from muxsim.perf import get_latency_model

    rows = [r.split("|")[1:-1] for r in _table_module().readme_block(README).splitlines()
            if r.startswith("| ") and not r.startswith("| GPU")]
    listed = {(g.strip(), m.strip(), int(n)) for g, _, users, n, *_ in rows for m in users.split(",")}
    assert len(rows) >= 12 and ("a100-80gb", "llama-2-7b", 1) in listed
    calibrated = {(g, m) for g, m, _ in listed}
    for gpu in GPUS:
        lat = get_latency_model(gpu)
        for name, model in MODELS.items():
            for n in (1, 2, 4, 8):
                src = lat.curve(model, n, GPUS[gpu]).source
                want = ("fitted" if (gpu, name, n) in listed else "fitted-scaled" if (gpu, name) in calibrated
                        else "roofline")
                assert src == want, (gpu, name, n, src)


def test_quickstart_yaml_in_the_readme_is_the_file():
    block = README.split("## Quickstart")[1].split("```yaml\n")[1].split("```")[0]
    shown = yaml.safe_load(block)
    assert shown == yaml.safe_load((ROOT / "experiments" / "quickstart_h100.yaml").read_text())


def _paths(text: str) -> tuple[set[str], set[str]]:
    """Repository paths the text names: its Markdown links (relative to the document) and the
    `code` spans and commands that name a file (relative to the repository root)."""
    links = {m for m in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in m}
    code = set(re.findall(r"`((?:experiments|benchmarks|tests|examples|calibration|traces|docs|muxsim)/[\w./-]+)`", text))
    code |= set(re.findall(r"(?:muxsim (?:run|place|validate|workload) |python3? )((?:experiments|benchmarks|tests)/[\w./-]+)",
                           text))
    return links, code


@pytest.mark.parametrize("doc", list(DOCS), ids=lambda p: p.name)
def test_every_path_the_docs_name_exists(doc):
    links, code = _paths(DOCS[doc])
    # patterns (<gpu>.json, *.json) name no one file; muxsim/data/schema/ is another item's
    # folder; a module may be named without its .py
    code = {p for p in code if "<" not in p and "*" not in p and not p.startswith("muxsim/data/schema")}
    missing = sorted({p for p in links if not (doc.parent / p).exists()} | {p for p in code if not (ROOT / p).exists() and not (ROOT / f"{p}.py").exists()})
    assert missing == []


def test_every_experiment_the_readme_runs_loads():
    from muxsim.config import load_config

    names = set(re.findall(r"experiments/(\w+\.yaml)", "\n".join(DOCS.values())))
    assert {"zipf_alpha.yaml", "quickstart_h100.yaml", "validate_cpu.yaml"} <= names
    for n in sorted(names):
        assert load_config(ROOT / "experiments" / n).name, n


def test_readme_install_and_test_commands_are_ci_s():
    ci = (ROOT / ".ci" / "run").read_text()
    setup = README.split("## Set-up")[1].split("\n## ")[0]
    for line in ci.splitlines():
        if line.startswith("python3 -m pip install"):
            assert line.replace(" -q", "") in setup, line
    assert "    python3 -m pytest -q\n" in setup and "python3 -m pytest -q" in ci


@pytest.mark.skipif(not (SHARED / "traces" / "azure_llm_2023_conv.csv").exists(),
                    reason="needs ../shared/data/traces (the Azure conversation trace)")
def test_real_traces_spec_example_synthesizes(tmp_path):
    """The README's spec, drift included, reaches every window (it did not: a drift at 600 s
    after rescaling to 505 s, now refused)."""
    from muxsim.workload.synth import load_synth_spec, synthesize

    block = README.split("## Real traces")[1].split("```yaml\n")[1].split("```")[0]
    spec = yaml.safe_load(block)
    drift = yaml.safe_load(re.search(r"# or (\{drift: .*\})", block)[1])
    spec["source"]["path"] = str(SHARED / "traces" / "azure_llm_2023_conv.csv")
    for pop in (spec["popularity"], drift):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({**spec, "popularity": pop}))
        df = synthesize(load_synth_spec(path))
        assert df.llm.nunique() == 19
    until = drift["drift"][0]["until_s"]
    late, early = df[df.arrival_s >= until], df[df.arrival_s < until]
    # alpha 2.0 after the drift: llm-0 takes a far larger share than under alpha 0.5 before it
    assert (late.llm == "llm-0").mean() > 1.5 * (early.llm == "llm-0").mean()
    # the example as it was (a drift at 600 s) is refused
    path.write_text(yaml.safe_dump({**spec, "popularity": {"drift": [{"until_s": 600, "alpha": 0.5}, {"alpha": 2.0}]}}))
    with pytest.raises(ValueError, match="popularity.drift.1: starts at 600 s"):
        synthesize(load_synth_spec(path))


def test_readme_python_api_snippet_runs(monkeypatch):
    """The Python API section's code, as printed, from the repository root."""
    import pandas as pd

    code = README.split("## Python API")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    res, one = scope["res"], scope["one"]
    assert isinstance(res.summary, pd.DataFrame) and len(res.requests) == res.n_requests
    assert res.out is None  # nothing written without out=
    assert set(one.summary.strategy) == {"spatial"} and (one.summary.cell == "alpha=2.1").all()
