"""Headless Chromium for the report tests: what a page shows at a given width, measured in the browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("SWEEPLAB_REQUIRE_BROWSER"),
    reason="no chromium (CI installs it and sets SWEEPLAB_REQUIRE_BROWSER=1)",
)

# Run in a copy of the page (the report itself carries no script): the h2 sections, the page's width
# against the window's, and every element that reaches past the body's edges, or whose content spills out
# of it, without being a box that scrolls or inside one (a long command scrolls in its own box, which is
# allowed); and every table wider than its box (one that scrolls sideways hides its last columns).
PROBE = """<script>
const body = document.body.getBoundingClientRect();
const scrolls = (el) => {
  for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
    if (["auto", "scroll", "hidden"].includes(getComputedStyle(p).overflowX)) return true;
  }
  return false;
};
const overflowing = [];
for (const el of document.body.querySelectorAll("*")) {
  if (el.id === "probe" || el.tagName === "SCRIPT" || scrolls(el)) continue;
  const r = el.getBoundingClientRect();
  const own = ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
  if (r.right > body.right + 1 || r.left < body.left - 1 || (!own && el.scrollWidth > el.clientWidth + 1)) {
    overflowing.push(el.tagName + ": " + el.textContent.slice(0, 80));
  }
}
// a table wider than its box: its last columns are cut until the reader scrolls it sideways
const cut = [...document.querySelectorAll("table")]
  .filter((t) => t.scrollWidth > t.parentElement.clientWidth + 1)
  .map((t) => t.querySelector("tr").textContent.slice(0, 80));
const result = {
  sections: [...document.querySelectorAll("h2")].map((h) => h.textContent),
  cut_tables: cut,
  page_width: document.documentElement.scrollWidth,
  window_width: window.innerWidth,
  overflowing: overflowing,
};
const out = document.createElement("pre");
out.id = "probe";
out.textContent = JSON.stringify(result);
document.body.appendChild(out);
</script>"""


def flags(profile: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]


def dump_dom(page: Path, profile: Path, width: int = 1280) -> str:
    assert CHROMIUM, "SWEEPLAB_REQUIRE_BROWSER is set but chromium is not installed"
    command = [
        CHROMIUM,
        *flags(profile),
        f"--window-size={width},2000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


def measure(page: Path, work: Path, width: int = 1280) -> dict:
    """Sections, widths and overflowing elements of `page` shown `width` pixels wide."""
    probed = work / f"probed_{page.name}"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = dump_dom(probed, work / "chromium", width)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, shot: Path, work: Path, width: int = 1280, height: int = 6000) -> Path:
    assert CHROMIUM, "SWEEPLAB_REQUIRE_BROWSER is set but chromium is not installed"
    command = [CHROMIUM, *flags(work / "chromium"), f"--screenshot={shot}", f"--window-size={width},{height}"]
    subprocess.run([*command, page.resolve().as_uri()], capture_output=True, timeout=120)
    return shot
