"""The report opened from disk in headless Chromium: every figure decodes and nothing leaves the page.

Chromium writes a NetLog of every URL request it starts. Requests the browser makes for itself
(update checks, account probes) carry the initiator ``not an origin``; anything the page asks for
carries the page's origin (``null`` for file://). A control page with an external image and a
broken one proves that both checks can fail. A screenshot goes to ``test-artifacts/report.png``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hneurons.report import write_report

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "run_fixture"
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=180, check=False)


def _load(url: str, tmp: Path) -> tuple[dict, list[str]]:
    """(the page's image check, URLs the page requested) after the load event."""
    netlog = tmp / f"net-{len(list(tmp.glob('net-*')))}.json"
    proc = _chromium(url, tmp, f"--log-net-log={netlog}", "--virtual-time-budget=10000", "--dump-dom")
    m = re.search(r'<pre id="check"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    assert m and m.group(1), f"the check script did not run; chromium said: {proc.stderr[-500:]}"
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requested = [e["params"]["url"] for e in log["events"]
                 if names.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
                 and e["params"].get("initiator") != "not an origin"]  # "not an origin" = the browser itself
    return json.loads(m.group(1)), requested


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    return CHROMIUM


def test_checks_can_fail(chromium: Path, tmp_path: Path) -> None:
    """A page with an external and a corrupt image must be caught by both checks."""
    template = (ROOT / "src" / "hneurons" / "report" / "templates" / "page.html").read_text()
    script = re.search(r"<script>.*?</script>", template, re.S).group(0)
    page = tmp_path / "leak.html"
    page.write_text('<html><body><img alt="ext" src="http://127.0.0.1:9/x.png">'
                    '<img alt="broken" src="data:image/png;base64,AAAA"><pre id="check" hidden></pre>'
                    f"{script}</body></html>")
    check, requested = _load(page.as_uri(), tmp_path)
    assert (check["images"], check["failed"]) == (2, ["ext", "broken"])
    assert requested == ["http://127.0.0.1:9/x.png"]


def test_report_in_browser(chromium: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run, ignore=shutil.ignore_patterns("report.html"))
    report = write_report(run)
    n_img = report.read_text().count("<img ")
    check, requested = _load(report.as_uri(), tmp_path)
    assert check["images"] == n_img > 0
    assert check["failed"] == [], f"figures that did not decode: {check['failed']}"
    assert requested == [], f"the page made network requests: {requested}"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    height = min(int(check["height"]) + 40, 30_000)  # the whole page, so the screenshot shows every section
    proc = _chromium(report.as_uri(), tmp_path, f"--window-size=1200,{height}", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-500:]
