"""examples/: the quickstart notebook is the script's cells, and it runs from top to bottom in
a real Jupyter kernel (nbclient + ipykernel, the dev extra) without an error."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the example notebook needs the dev extra (nbformat)")
jupytext = pytest.importorskip("jupytext", reason="the example notebook needs the dev extra (jupytext)")
nbclient = pytest.importorskip("nbclient", reason="the example notebook needs the dev extra (nbclient)")
pytest.importorskip("ipykernel", reason="the example notebook needs the dev extra (ipykernel)")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_notebook_is_generated_from_the_script():
    """examples/quickstart.ipynb holds the cells of examples/quickstart.py (regenerate it with
    `jupytext --to ipynb --set-kernel python3 examples/quickstart.py` after editing the script)."""
    from_script = jupytext.read(EXAMPLES / "quickstart.py")
    committed = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    assert _cells(committed) == _cells(from_script)


def test_quickstart_notebook_runs(monkeypatch):
    nb = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    # the kernel imports the muxsim of this checkout, and draws its plots without a display
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "quickstart_h100 | 1 x 8 h100-80gb | 6 LLMs" in text
    assert "<muxsim.Results 'quickstart_h100': 2 cell(s) x [muxserve, spatial, temporal]" in text
    # the summary is shown as a table with every strategy, and the plots are images
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "total_throughput_rps" in html and all(s in html for s in ("muxserve", "spatial", "temporal"))
    pngs = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG") and len(p) > 5_000 for p in pngs)
