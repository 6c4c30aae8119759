"""The report in a real browser: headless Chromium loads the rendered tiny-demo report with
no JavaScript or console error and every image decoded (natural width above zero), and
saves a screenshot.

No DevTools client is needed: a probe script is put at the top of a copy of the page; it
records errors (capture-phase ``error`` events catch failed images too, ``console.error``
is wrapped) and, on ``load``, writes what it found into the DOM, which ``--dump-dom``
prints. When no Chromium is on PATH the test installs Debian's ``chromium`` (as root,
``apt-get``, bounded time) and skips, saying why, only when that is impossible.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_config
from report_helpers import run_through_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 120

PROBE = """<script>(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      errors.push("failed to load " + t.tagName + " " + String(t.currentSrc || t.src || t.href).slice(0, 80));
    } else {
      errors.push("js error: " + e.message + " (" + e.filename + ":" + e.lineno + ")");
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + e.reason);
  });
  var original = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
      .map(function (i) { return (i.alt || "?") + " " + i.src.slice(0, 48); });
    var out = document.createElement("pre");
    out.id = "browser-check";
    out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: errors,
      svgs: document.querySelectorAll("svg").length});
    document.body.appendChild(out);
  });
})();</script>"""

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # the page must need no network
]


def find_browser() -> str | None:
    """A Chromium-family browser: ``MMREC_CHROMIUM`` or the first of ``BROWSERS`` on PATH."""
    env = os.environ.get("MMREC_CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    return next((p for name in BROWSERS if (p := shutil.which(name))), None)


def install_browser() -> tuple[str | None, str]:
    """Try Debian's ``chromium`` package; (browser or None, why not)."""
    if shutil.which("apt-get") is None:
        return None, "no apt-get on this machine"
    if os.geteuid() != 0:
        return None, "not root, so apt-get cannot install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            if done.returncode != 0:
                return None, f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    except subprocess.TimeoutExpired:
        return None, f"apt-get did not finish within {INSTALL_TIMEOUT_S} s"
    found = find_browser()
    return found, "" if found else "apt-get installed chromium but no browser is on PATH"


@pytest.fixture(scope="session")
def browser() -> str:
    found = find_browser()
    if found is None:
        found, why = install_browser()
        if found is None:
            pytest.skip(
                f"no headless browser: none of {BROWSERS} on PATH and installing chromium failed: {why}"
            )
    return found


def _chromium(browser: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    profile = cwd / "chromium-profile"
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
    )


def check_page(browser: str, page: str, work: Path) -> dict[str, Any]:
    """Load ``page`` (HTML text) with the probe in front; what the probe found."""
    work.mkdir(parents=True, exist_ok=True)
    target = work / "probed.html"
    head = re.search(r"<head[^>]*>|<meta charset[^>]*>", page)
    cut = head.end() if head else 0
    target.write_text(page[:cut] + PROBE + page[cut:])
    done = _chromium(browser, ["--virtual-time-budget=15000", "--dump-dom", target.as_uri()], work)
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe wrote nothing (exit {done.returncode}): {done.stderr[-1500:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(browser: str, page: Path, out: Path, width: int = 1280, height: int = 2400) -> Path:
    done = _chromium(
        browser, [f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri()], out.parent
    )
    assert out.is_file() and out.stat().st_size > 0, (
        f"no screenshot (exit {done.returncode}): {done.stderr[-800:]}"
    )
    return out


@pytest.fixture(scope="module")
def rendered(tiny_store, tmp_path_factory) -> Path:
    root, _, _ = tiny_store
    work = tmp_path_factory.mktemp("browser")
    layout, _ = run_through_report(root, tiny_config(root), work)
    return layout.report()


def test_report_loads_in_chromium_with_every_image(browser, rendered, tmp_path) -> None:
    page = rendered.read_text()
    # Self-contained: nothing to fetch (the browser also has every host name unresolvable).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//""", page)
    found = check_page(browser, page, tmp_path / "ok")
    assert found["errors"] == [], found["errors"]
    assert found["broken"] == [], found["broken"]
    assert found["images"] == page.count("<img ") > 0
    assert found["svgs"] >= 8  # the charts and a map per feature table
    shot = screenshot(browser, rendered, tmp_path / "report.png")
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2400) and im.convert("L").getextrema()[0] < 128  # drew something dark


def test_the_probe_catches_a_broken_image_and_a_script_error(browser, rendered, tmp_path) -> None:
    page = rendered.read_text()
    marker = 'src="data:image/jpeg;base64,'
    assert marker in page
    broken = page.replace(marker, marker + "broken", 1)
    found = check_page(browser, broken, tmp_path / "img")
    assert len(found["broken"]) == 1, found
    assert any(e.startswith("failed to load IMG") for e in found["errors"]), found
    with_error = page.replace("</body>", "<script>no_such_function();</script></body>", 1)
    found = check_page(browser, with_error, tmp_path / "js")
    assert found["broken"] == [] and any("no_such_function" in e for e in found["errors"]), found
