"""report.html (issue 14 item 5): a small real run's page, opened in headless Chromium.

The browser test needs Chromium (Debian's ``chromium`` package: ``apt-get install -y
chromium``; or ``MUXSIM_CHROMIUM=/path/to/chrome``). Under CI (the ``CI`` variable set, as
``.ci/run`` sets it, which also installs the package) a missing browser fails the test; on a
developer machine without one the browser tests are skipped with that reason, the rest run.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from muxsim import html_report
from muxsim.cli import app

runner = CliRunner()

# A reduced run on H100s: every model's latency comes from the roofline model there, so the
# page must mark rows; two cells, three strategies, 6 s of traffic (about 5 s to simulate).
_CONFIG = {
    "name": "report_check",
    "seed": 3,
    "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "h100-80gb"},
    "llms": [{"model": "llama-7b", "count": 3}, {"model": "llama-13b", "count": 1}],
    "workload": {"duration_s": 6, "arrival": "poisson", "lengths": {"kind": "sharegpt_v3"},
                 "popularity": {"alpha": [0.9, 2.1], "max_rate": 6}},
    "strategies": ["muxserve", "spatial", "temporal"],
    "slo": {"scales": [1, 2, 4, 8, 16], "goodput_scale": 8},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    cfg = tmp / "report_check.yaml"
    cfg.write_text(yaml.safe_dump(_CONFIG))
    out = tmp / "out"
    res = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    return out


def _chromium() -> str:
    found = os.environ.get("MUXSIM_CHROMIUM") or next(
        (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if found:
        return found
    msg = ("no Chromium found (looked for chromium, chromium-browser, google-chrome and $MUXSIM_CHROMIUM); "
           "install it: apt-get install -y chromium")
    if os.environ.get("CI"):
        pytest.fail(msg + " (required under CI)")
    pytest.skip(msg)


def _browser(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--mute-audio", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


class _Tables(html.parser.HTMLParser):
    """Every <table id=...>'s cell texts, row by row (thead and tbody), from a DOM dump."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._id = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._id = a["id"]
            self.tables[self._id] = []
        elif self._id and tag == "tr":
            self._row = []
        elif self._row is not None and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._id].append(self._row)
            self._row = None
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


# The page itself has no script; the test adds this one to a copy, to ask the browser what it
# rendered: each image's decoded size and each table's laid-out size.
_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,
                                               complete: i.complete, shown: i.getBoundingClientRect().width}));
  const tables = [...document.querySelectorAll("table")].map(t => ({id: t.id, rows: t.rows.length,
                                                                   height: t.getBoundingClientRect().height}));
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({imgs, tables, title: document.title});
  document.body.appendChild(pre);
});
</script>"""


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE + "\n</body>"), encoding="utf-8")
    dump = _browser("--dump-dom", probed.as_uri())
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = dump.stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, "the probe script did not run: " + dom[-500:]
    probe = json.loads(html.unescape(m.group(1)))
    assert probe["title"] == "muxsim report: report_check"

    # every plot decoded at the PNG's own size and laid out
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    assert len(probe["imgs"]) == len(pngs) == 4
    for img in probe["imgs"]:
        name = img["alt"].split(":", 1)[0]
        w, h = struct.unpack(">II", (run_dir / name).read_bytes()[16:24])
        assert img["complete"] and (img["w"], img["h"]) == (w, h), img
        assert img["shown"] > 100, img

    heights = {t["id"]: t["height"] for t in probe["tables"] if t["id"]}
    for tid in ("run-facts", "summary-overall", "ratios-table", "estimate-overall", "latency-sources"):
        assert heights.get(tid, 0) > 20, (tid, heights.get(tid))

    tables = _Tables()
    tables.feed(dom)
    summary = pd.read_csv(run_dir / "summary.csv")
    overall = summary[summary.llm == "all"]
    rows = tables.tables["summary-overall"]
    head, body = rows[0], rows[1:]
    assert head[:3] == ["cell", "strategy", "latency_source"]
    assert [(r[0], r[1]) for r in body] == list(zip(overall.cell, overall.strategy))
    served = head.index("total_throughput_rps")
    assert [float(r[served]) for r in body] == pytest.approx(overall.total_throughput_rps.tolist(), rel=1e-3)
    att = head.index("slo_attainment@8")
    assert [float(r[att].rstrip("%")) / 100 for r in body] == pytest.approx(overall["slo_attainment@8"].tolist(),
                                                                          abs=5e-4)
    # H100: roofline everywhere, said in the table
    assert all("roofline" in r[2] for r in body)
    latency = {r[0]: r[1] for r in tables.tables["latency-sources"][1:]}
    assert latency == {"llama-7b": "roofline (not calibrated)", "llama-13b": "roofline (not calibrated)"}
    ratios = tables.tables["ratios-table"]
    assert "muxserve/spatial" in ratios[0] and ratios[1][ratios[0].index("muxserve/spatial")].endswith("x")
    est = tables.tables["estimate-llm"]
    assert [r[2] for r in est[1:4]] == ["llm-0", "llm-1", "llm-2"]  # popularity order

    # the screenshot is not blank: the page drew text, tables and plots
    shot = tmp_path / "shot.png"
    res = _browser(f"--screenshot={shot}", "--window-size=1280,2400", (run_dir / "report.html").as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    import matplotlib.image

    px = matplotlib.image.imread(shot)[..., :3]
    assert px.shape[:2] == (2400, 1280)
    ink = (px.min(axis=2) < 0.8).mean()  # share of pixels that are not (near) white
    assert px.std() > 0.05 and 0.03 < ink < 0.9, (px.std(), ink)
    colored = (px.max(axis=2) - px.min(axis=2) > 0.25).mean()  # plot lines, highlighted rows
    assert colored > 0.002, colored


def test_report_is_self_contained_and_deterministic(run_dir, tmp_path):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page), "the page refers to another file"
    assert not re.search(r"url\(", page)
    assert page.count('src="data:image/png;base64,') == 4
    # the resolved config as it ran, and the placements
    assert (run_dir / "config.resolved.yaml").read_text().splitlines()[0] in page
    assert 'id="placements"' in page and "SM share prefill / decode" in page
    out2 = tmp_path / "again"
    cfg = tmp_path / "report_check.yaml"
    cfg.write_text(yaml.safe_dump(_CONFIG))
    res = runner.invoke(app, ["run", str(cfg), "--out", str(out2), "--jobs", "2"])
    assert res.exit_code == 0, res.output
    assert (out2 / "report.html").read_bytes() == (run_dir / "report.html").read_bytes()


def test_render_report_marks_and_escapes(run_dir):
    summary = pd.read_parquet(run_dir / "summary.parquet")
    summary["latency_source"] = np.where(summary.strategy == "spatial", "fitted", summary.latency_source)
    summary["cell"] = summary.cell.str.replace("alpha=0.9", "<b>alpha</b>&0.9", regex=False)
    summary["status"] = np.where((summary.strategy == "temporal") & (summary.cell == "alpha=2.1"), "infeasible", "ok")
    summary["reason"] = np.where(summary.status == "infeasible", "needs 12 GPUs, the cluster has 8", "")
    summary["usd_per_million_output_tokens"] = 1.5
    cfg = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    pngs = {"throughput.png": (run_dir / "throughput.png").read_bytes()}
    page = html_report.render_report(summary, None, cfg, "name: x\n", 3, "0.1.0", pngs,
                                     {"latency_model": {"llama-7b": "roofline", "llama-13b": "fitted"}})
    assert "<b>alpha</b>" not in page and "&lt;b&gt;alpha&lt;/b&gt;&amp;0.9" in page
    t = _Tables()
    t.feed(page)
    overall = t.tables["summary-overall"]
    head = overall[0]
    assert head[:5] == ["cell", "strategy", "status", "reason", "latency_source"]
    assert "usd_per_million_output_tokens" in head  # later columns appear
    assert t.tables["infeasible"][1:] == [["alpha=2.1", "temporal", "infeasible", "needs 12 GPUs, the cluster has 8"]]
    # row classes: roofline rows highlighted, the infeasible one too
    rows = re.findall(r'<tr class="([^"]*)"><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>',
                      page[page.index('id="summary-overall"'):page.index('id="summary-overall-all"')])
    classes = {(c, s): k.split() for k, c, s in rows}
    assert "roofline" in classes[("alpha=2.1", "muxserve")]
    assert "roofline" not in classes.get(("alpha=2.1", "spatial"), [])
    assert "infeasible" in classes[("alpha=2.1", "temporal")]
    lat = t.tables["latency-sources"]
    assert lat[1:] == [["llama-7b", "roofline (not calibrated)", "llm-0, llm-1, llm-2"], ["llama-13b", "fitted", "llm-3"]]
    assert "No ratios" in page and "Placements" in page and "Not recorded in this run." in page
