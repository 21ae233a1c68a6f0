"""The HTML report in a real browser: Debian's chromium, headless and kept off the network,
renders report.html to a PNG that is not blank and is as tall as the page.

scripts/install_chromium.sh (run by .ci/run) installs chromium; the test skips only where
it is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _report_outputs import write_outputs
from m3sa.config import config_from_dict
from m3sa.report import build_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/install_chromium.sh)")

WIDTH = 1280
OFFLINE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]


def _chromium(tmp: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{name}"  # a fresh --user-data-dir per run
    return subprocess.run([CHROMIUM, *OFFLINE_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def _page_height(tmp: Path, page: Path) -> int:
    """document height at WIDTH, measured by a copy of the page that writes it into its title."""
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>addEventListener('load', () => { document.title = 'H=' + "
                   "document.documentElement.scrollHeight; });</script></body>"))
    done = _chromium(tmp, "probe", f"--window-size={WIDTH},400", "--virtual-time-budget=5000", "--dump-dom",
                     probe.as_uri())
    match = re.search(r"<title>H=(\d+)</title>", done.stdout)
    assert match, f"chromium printed no height: {done.stderr[-500:]}"
    return int(match.group(1))


def test_report_renders_in_headless_chromium(tmp_path):
    write_outputs(tmp_path)
    write_report(build_report(config_from_dict({"report": {"dpi": 70}}), tmp_path), tmp_path / "reports")
    page = tmp_path / "reports" / "report.html"
    height = _page_height(tmp_path, page)
    assert height > 3000, "the full report is several screens long"

    shot = tmp_path / "report.png"
    done = _chromium(tmp_path, "shot", f"--window-size={WIDTH},{height}", "--virtual-time-budget=5000",
                     f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-500:]
    with Image.open(shot) as im:
        assert im.size == (WIDTH, height)
        pixels = np.asarray(im.convert("L"), dtype=np.float32)  # (height, WIDTH)
    ink = pixels < 200  # text, lines, figure content
    assert pixels.std() > 20 and ink.mean() > 0.01, "screenshot is blank"
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows[0] < 100, "page content starts at the top"
    assert rows[-1] > height - 250, "content reaches the bottom of the page, so the whole page was rendered"
    # the embedded figures were decoded: a figure has many distinct colours, text alone few
    with Image.open(shot) as im:
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 500
