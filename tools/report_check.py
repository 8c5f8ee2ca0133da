"""Look at a report as a person would: render it in headless Chromium, screenshot it, and check it.

    python -m tools.report_check RUN/report.html [--screenshot docs/report.png] [--width 1280 --height 2400]

Checks: the rendered DOM has every section of ``tools.report`` (summary, curves, scenarios, galleries,
explanations, config) and at least one gallery image; Chromium logged no console message (the page runs
no script) and every image the DOM names is inlined or present. Needs Debian's ``chromium`` package (``make report-check`` installs it with apt-get when
missing). Exits 1 with the problems listed, 2 when no Chromium is found.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SECTIONS = ("summary", "curves", "scenarios", "galleries", "explanations", "config")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def render(page: Path, screenshot: Path, width: int, height: int, browser: str, timeout: int = 120) -> dict:
    """(DOM text, console/resource problems) of ``page`` rendered by headless Chromium, and its screenshot."""
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="whaleid_chromium_") as profile:
        common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
                  "--enable-logging=stderr", "--v=0", f"--window-size={width},{height}"]
        dom = subprocess.run(common + ["--virtual-time-budget=3000", "--dump-dom", url], capture_output=True, text=True,
                             timeout=timeout)
        shot = subprocess.run(common + [f"--screenshot={screenshot.resolve()}", url], capture_output=True, text=True,
                              timeout=timeout)
    log = dom.stderr + shot.stderr
    # the report runs no script, so any console message is unexpected; headless Chromium logs them as CONSOLE
    problems = [line.strip() for line in log.splitlines()
                if re.search(r"CONSOLE|Failed to load resource|net::ERR_", line, re.I)]
    for src in re.findall(r'<img[^>]*\bsrc="([^"]*)"', dom.stdout):  # headless Chromium does not log a missing image
        if not src.startswith("data:") and not (page.parent / src).is_file():
            problems.append(f"failed resource load: image {src} not found")
    return {"dom": dom.stdout, "problems": problems, "screenshot": screenshot if screenshot.is_file() else None}


def check_dom(dom: str) -> list[str]:
    problems = [f"section '{s}' missing from the rendered page" for s in SECTIONS if f'id="{s}"' not in dom]
    if not re.search(r'class="thumb (hit|miss)"', dom):
        problems.append("no gallery image rendered")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.report_check", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m tools.report_check runs/demo/report.html --screenshot docs/report.png")
    p.add_argument("page", type=Path, help="an HTML report written by tools.report")
    p.add_argument("--screenshot", type=Path, help="PNG to write (default: beside the page)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2400)
    args = p.parse_args(argv)
    if not args.page.is_file():
        p.exit(2, f"error: not found: {args.page}\n")
    browser = find_browser()
    if browser is None:
        p.exit(2, "error: no Chromium found; install Debian's chromium package (make report-check does)\n")
    shot = args.screenshot or args.page.with_suffix(".png")
    result = render(args.page, shot, args.width, args.height, browser)
    problems = result["problems"] + check_dom(result["dom"])
    if result["screenshot"] is None:
        problems.append("no screenshot written")
    for line in problems:
        print(f"PROBLEM: {line}")
    print(f"{args.page}: {len(SECTIONS)} sections checked, screenshot {shot}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
