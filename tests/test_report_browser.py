"""The HTML report opens in a real browser: headless Chromium loads it, runs a probe script, and every plot
decodes to a real image. CI installs Chromium from Debian's packages (Makefile `browser`)."""
import json
import os
import re
import shutil
import subprocess

import pytest

from router.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here; `make browser` installs it")
def test_html_report_renders_in_headless_chromium_with_its_plots(tmp_path):
    assert CHROMIUM, "CI must have chromium: `make browser` installs it"
    out = tmp_path / "report"
    assert main(["report", "--data", "data/outcomes/default.csv", "--policy", "serve_config.yaml",
                 "--out", str(out), "--seed", "0"]) == 0
    page = (out / "default.html").read_text()
    # a probe that writes what the browser made of the page into the DOM, read back with --dump-dom
    probe = ("<script>addEventListener('load', () => { const imgs = [...document.images]; document.body.dataset.probe ="
             " JSON.stringify({images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0)"
             ".map(i => [i.naturalWidth, i.naturalHeight]), tables: document.querySelectorAll('table').length,"
             " title: document.title}); });</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, f"the page did not load in Chromium: {dom[:300]!r}"
    probe_result = json.loads(match.group(1).replace("&quot;", '"'))
    assert probe_result["images"] == 1 and len(probe_result["decoded"]) == 1
    width, height = probe_result["decoded"][0]
    assert width >= 800 and height >= 600  # the four-panel figure, decoded by the browser
    assert probe_result["tables"] >= 5 and probe_result["title"] == "Routing report: default"
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,1600", probed.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000  # not a blank page
