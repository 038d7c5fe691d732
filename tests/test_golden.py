"""The restructuring of issue 11 is behaviour-preserving: a reduced zipf_alpha run writes the
same outputs as the code before it did (digests in tests/golden/reduced_runs.json, made by
tests/golden/outputs.py on the commit before the restructuring; the Parquet schema digests were
added on commit 6675171, whose outputs matched those digests byte for byte)."""

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
