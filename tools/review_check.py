"""Look at the review page as a reviewer would: serve a catalogue, open it in headless Chromium, screenshot it.

    python -m tools.review_check RUN [--screenshot docs/review.png] [--heatmap]

RUN is a run folder that ``make identify-demo`` went through (``RUN/identify/catalogue.sqlite`` and
``bundle.zip``). The page is served by ``catalogue.review.server`` with uvicorn on a free port of 127.0.0.1, driven by
Playwright in Debian's ``chromium`` (the first photo under review, its Heatmap button for the pair heatmap), checked (every
photo loaded, the filters shown, no error on the page or its console) and screenshotted. Nothing is decided:
the catalogue's log is left as it was. Exits 1 with the problems listed, 2 without Chromium or Playwright.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def check(db: Path, bundle: Path | None, screenshot: Path, heatmap: bool, width: int = 1500, height: int = 1000) -> list:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from catalogue.review.server import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app(db, "review_check", bundle, port=port), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    problems = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(f"http://127.0.0.1:{port}/?decision=review")
            page.wait_for_selector("#query-card img", timeout=30000)
            if heatmap:
                page.click("#heat-btn")
                page.wait_for_selector("#heat-img", timeout=60000)
            page.wait_for_function("[...document.images].every(i => i.complete)", timeout=60000)
            broken = page.eval_on_selector_all("img", "els => els.filter(e => !e.naturalWidth).map(e => e.src)")
            problems += [f"image did not load: {src}" for src in broken]
            if "Filters in force" not in page.text_content("#filters"):
                problems.append("the filters in force are not shown")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.review_check", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder with identify/catalogue.sqlite (make identify-demo)")
    p.add_argument("--screenshot", type=Path, help="PNG to write (default RUN/identify/review.png)")
    p.add_argument("--heatmap", action="store_true", help="show the pair heatmap of the first candidate (needs the bundle)")
    args = p.parse_args(argv)
    db, bundle = args.run / "identify" / "catalogue.sqlite", args.run / "identify" / "bundle.zip"
    if not db.is_file():
        p.exit(2, f"error: {db} not found; run make identify-demo RUN={args.run} first\n")
    if not shutil.which("chromium"):
        p.exit(2, "error: no chromium; `make test` or `apt-get install chromium` installs Debian's\n")
    shot = args.screenshot or args.run / "identify" / "review.png"
    problems = check(db, bundle if bundle.is_file() else None, shot, args.heatmap)
    for problem in problems:
        print(f"problem: {problem}")
    print(f"{'ok' if not problems else f'{len(problems)} problem(s)'}; screenshot {shot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
