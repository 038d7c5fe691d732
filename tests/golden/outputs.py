"""Digests of every output of a reduced zipf_alpha run, to check that a restructuring changes
no output (issue 11: behaviour-preserving, byte-identical for the same config and seed).

``python tests/golden/outputs.py`` (from the repository root) runs the reduced experiments and
writes ``tests/golden/reduced_runs.json``; ``tests/test_golden.py`` runs it again and compares.
Text outputs (CSV, JSON, YAML) are compared byte for byte. Parquet files are compared by
content: their Arrow schema (column names and types) and the table they decode to (column
names, pandas dtypes and every value, in order); their bytes also hold the writer's version and
how the rows were cut into row groups, neither of which is a result. PNG files carry
matplotlib's version, so they are compared byte for byte when matplotlib is the version the
digests were made with, else not at all.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("reduced_runs.json")


SHARED = ROOT.parent / "shared"


def reduced_configs(folder: Path) -> dict[str, Path]:
    """The reduced experiments, by name:

    - ``zipf``: zipf_alpha reduced to 2 cells of 12 s, every registered strategy, and a
      simulated search bounded by candidates (never by time, which would not be deterministic);
    - ``chatlmsys``: its first rate set, 8 s (per-LLM rates, mean-matched lengths);
    - ``azure``: the Azure conversation trace, its first 3,000 requests (when ../shared is
      there; a trace-driven workload).
    """
    exp = ROOT / "experiments"
    zipf = yaml.safe_load((exp / "zipf_alpha.yaml").read_text())
    zipf["workload"]["duration_s"] = 12
    zipf["workload"]["popularity"] = {"alpha": [0.9, 2.1], "max_rate": 6}
    zipf["strategies"] = ["muxserve", "spatial", "temporal", "roundrobin", "muxserve+sim"]
    zipf["placement"] = {"candidates": 6, "budget_s": 10_000, "starts": 2}
    chat = yaml.safe_load((exp / "chatlmsys.yaml").read_text())
    chat["workload"]["duration_s"] = 8
    chat["workload"]["rate_sets"] = chat["workload"]["rate_sets"][:1]
    cfgs = {"zipf": zipf, "chatlmsys": chat}
    if SHARED.is_dir():
        azure = yaml.safe_load((exp / "azure_conv.yaml").read_text())
        # a relative path through a link: the outputs (resolved config, the workload's source
        # attribute) then name the same path in every checkout
        link = folder / "shared"
        if not link.exists():
            link.symlink_to(SHARED)
        azure["workload"]["trace"]["source"]["path"] = "shared/data/traces/azure_llm_2023_conv.csv"
        azure["workload"]["trace"]["max_requests"] = 3000
        azure["workload"]["trace"]["popularity"] = {"alpha": [0.9, 2.1]}
        cfgs["azure"] = azure
    paths = {}
    for name, cfg in cfgs.items():
        paths[name] = folder / f"{name}_reduced.yaml"
        paths[name].write_text(yaml.safe_dump(cfg))
    return paths


def run_reduced(folder: Path) -> dict[str, Path]:
    """Run every reduced experiment with ``python -m muxsim`` (2 jobs) into ``folder/<name>``."""
    outs = {}
    for name, cfg in reduced_configs(folder).items():
        outs[name] = folder / name
        subprocess.run([sys.executable, "-m", "muxsim", "run", str(cfg), "--out", str(outs[name]),
                        "--jobs", "2"], check=True, capture_output=True, cwd=folder)
    return outs


def _content(path: Path) -> str:
    df = pd.read_parquet(path)
    h = hashlib.sha256(json.dumps([list(map(str, df.columns)), list(map(str, df.dtypes))]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _schema(path: Path) -> str:
    """Digest of a Parquet file's Arrow schema: names, types and nullability in order, without
    the key-value metadata (which holds the writing library's version)."""
    text = pq.read_schema(path).remove_metadata().to_string(show_field_metadata=False)
    return hashlib.sha256(text.encode()).hexdigest()


def digests(outs: dict[str, Path]) -> dict:
    """{"versions": ..., "files": {"<run>/<file>": {"bytes": sha256, "content": sha256,
    "schema": sha256 (both Parquet only)}}}."""
    import matplotlib
    import pyarrow

    files = {}
    for name, out in outs.items():
        for f in sorted(out.rglob("*")):
            if f.is_file():
                d = {"bytes": hashlib.sha256(f.read_bytes()).hexdigest()}
                if f.suffix == ".parquet":
                    d["content"] = _content(f)
                    d["schema"] = _schema(f)
                files[f"{name}/{f.relative_to(out)}"] = d
    return {"versions": {"pyarrow": pyarrow.__version__, "matplotlib": matplotlib.__version__,
                         "pandas": pd.__version__}, "files": files}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(digests(run_reduced(Path(tmp))), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
