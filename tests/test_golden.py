"""Same config and seed, same outputs: the reduced zipf_alpha, chatlmsys and Azure runs write
what tests/golden/reduced_runs.json records (made by tests/golden/outputs.py).

History of the digests: made on the commit before issue 11's restructuring (which preserved
them); Parquet schema digests added on commit 6675171, whose outputs matched byte for byte;
remade in issue 14, whose outputs add columns and files on purpose, after checking against the
code at the start of that work (72bba76) that nothing it wrote before changed: every earlier
column of requests.parquet and of the workloads identical, the summary's shared columns and
ratios.csv identical, the old TTFT and latency percentiles (s) equal to the new ones (ms) / 1000,
run.json differing only in its file list and the new timeline entry."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "golden"))

import outputs  # noqa: E402


def test_reduced_zipf_alpha_outputs_are_unchanged(tmp_path):
    want = json.loads(outputs.GOLDEN.read_text())
    got = outputs.digests(outputs.run_reduced(tmp_path))
    # issue 12 added the list of what muxsim wrote to every output folder; nothing else changed
    got["files"] = {k: v for k, v in got["files"].items() if not k.endswith("/.muxsim-output.json")}
    if not outputs.SHARED.is_dir():  # the trace-driven run needs ../shared's Azure trace
        want["files"] = {k: v for k, v in want["files"].items() if not k.startswith("azure/")}
    assert sorted(got["files"]) == sorted(want["files"])
    same = {k: got["versions"][k] == want["versions"][k] for k in want["versions"]}
    for name, d in want["files"].items():
        g = got["files"][name]
        if name.endswith(".parquet"):
            # By content, never by bytes: the same table (schema, column names, dtypes, every
            # value, in order) is the same result, while the bytes also record how its rows
            # were cut into row groups and which library wrote them. requests.parquet is now
            # streamed one run at a time (a row group or more per run, issue 13 item 3), so its
            # bytes differ from the one-shot write's even on the same pyarrow.
            assert g["content"] == d["content"], name
            assert g["schema"] == d["schema"], name
        elif name.endswith(".png"):
            if same["matplotlib"]:
                assert g["bytes"] == d["bytes"], name
        else:
            assert g["bytes"] == d["bytes"], name
