"""The built book in a real browser: every page of the table of contents opened in headless Chromium.

`make browser` runs this after the book is built (`make test` does both); the default pytest run
skips it (tests/conftest.py). Chromium is Debian's (`/usr/bin/chromium`, or $CHROMIUM), driven by
Playwright, which never downloads a browser here. Every request that is not to the local server is
blocked, so the check is offline and shows that the book needs no CDN. Screenshots go to
`_build/screenshots/` (not committed).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import book_notebooks
import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root in a container, without a GPU, and quiet on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


TOC_FILES = book_notebooks.toc_entries()
NOTEBOOK_PAGES = {entry for entry in TOC_FILES if (ROOT / f"{entry}.ipynb").exists()}
# Pages whose sources have display or inline math: the check must find it rendered there.
MATH_PAGES = {
    entry
    for entry in TOC_FILES
    for source in (ROOT / f"{entry}.ipynb", ROOT / f"{entry}.md")
    if source.exists() and re.search(r"\$\$|(?<![\\$])\$[^$\s][^$\n]*\$", source.read_text())
}

# What a reader can search with on the page: the search fields and buttons the theme renders, and
# any search input outside the (closed) search dialog, counted only when visible.
VISIBLE_SEARCH_JS = r"""() => Array.from(document.querySelectorAll(
        '.search-button__button, .search-button-field, input[type="search"], input[name="q"]'))
    .filter(e => !e.closest('dialog:not([open])') && e.checkVisibility({visibilityProperty: true}))
    .map(e => e.className || e.tagName)"""

RAW_TEX_JS = r"""() => {
    const copy = document.querySelector('main, article, body').cloneNode(true);
    copy.querySelectorAll('pre, code, script, style, mjx-container').forEach(e => e.remove());
    const text = copy.textContent;
    return ['$$', '\\(', '\\)', '\\[', '\\begin{'].filter(d => text.includes(d));
}"""


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` first")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set $CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageVisit:
    """A page opened with every non-local request blocked, its console errors recorded."""

    def __init__(self, browser, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url, wait_until="load")

    def _route(self, route) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def close(self) -> None:
        self.context.close()


def wait_for_mathjax(page) -> int:
    """Wait until MathJax (if the page loads it) has typeset everything; the number of formulas."""
    if not page.evaluate("() => !!document.querySelector('script[src*=\"mathjax\"]')"):
        return 0
    page.wait_for_function(
        "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000
    )
    return page.evaluate(
        "() => MathJax.startup.promise.then(() => document.querySelectorAll('mjx-container').length)"
    )


@pytest.mark.parametrize("entry", TOC_FILES)
def test_page_renders_offline(entry, server, browser):
    visit = PageVisit(browser, f"{server}/{entry}.html")
    page = visit.page
    try:
        formulas = wait_for_mathjax(page)
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=20000)
        broken = page.evaluate(
            "() => Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)"
        )
        images = page.evaluate("() => document.images.length")
        raw_math = page.evaluate(
            "() => Array.from(document.querySelectorAll('.math'))"
            ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60))"
        )
        inputs = page.evaluate("() => document.querySelectorAll('.cell_input').length")
        outputs = page.evaluate("() => document.querySelectorAll('.cell_output').length")
        # TeX delimiters left in the visible prose (code, already typeset math and scripts aside)
        raw_tex = page.evaluate(RAW_TEX_JS)
        search_boxes = page.evaluate(VISIBLE_SEARCH_JS)
        colab_links = page.evaluate(
            "() => Array.from(document.querySelectorAll('a[href^=\"https://colab.research.google.com\"]'))"
            ".map(a => a.href)"
        )
        launch_links = page.evaluate(
            "() => Array.from(document.querySelectorAll('.dropdown-launch-buttons a')).map(a => a.href)"
        )
        badge_links = page.evaluate(
            "() => Array.from(document.querySelectorAll('a > img[alt=\"Open in Colab\"]'))"
            ".map(img => img.parentElement.href)"
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{entry.replace('/', '_')}.png"))
        if outputs:  # and the first code cell that has an output, code and output together
            cell = page.locator(".cell:has(.cell_input):has(.cell_output)").first
            cell.screenshot(path=str(SCREENSHOTS / f"{entry.replace('/', '_')}-first-cell.png"))
        title = page.title()
    finally:
        visit.close()
    print(
        f"\n{entry}: '{title}' images {images} (broken {len(broken)}), formulas {formulas}, "
        f"cells {inputs} in / {outputs} out, Colab links {len(colab_links)}, console errors "
        f"{len(visit.errors)}, blocked requests {len(visit.blocked)}"
    )
    assert not visit.errors, visit.errors
    assert not broken, broken
    if entry in MATH_PAGES:
        assert formulas > 0, "the source has math but MathJax rendered none"
    assert not raw_math, f"math left untypeset: {raw_math[:3]}"
    assert not raw_tex, f"TeX delimiters in the visible text: {raw_tex[:3]}"
    # one search box per page (pydata-sphinx-theme 0.17 added a second one, book/_ext/theme_fixes.py)
    assert len(search_boxes) == 1, search_boxes
    if entry in NOTEBOOK_PAGES:
        assert inputs > 0 and outputs > 0
        expected = book_notebooks.colab_url(Path(entry).name + ".ipynb")
        assert "/colab/" in expected, expected
        # the launch button in the header and the badge above the title, both to the chapter's Colab
        # edition (colab/NN.ipynb; book/_ext/colab_launch.py rewrites the theme's button)
        assert launch_links == [expected], launch_links
        assert badge_links == [expected], badge_links
        assert set(colab_links) == {expected}, colab_links
    assert not [u for u in visit.blocked if "mathjax" in u.lower()], "MathJax must come from the book"


def test_math_pages_are_known():
    # guards the regex above: these chapters are full of formulas
    assert {"book/02_position_embeddings", "book/03_attention", "book/08_performance"} <= MATH_PAGES


def test_search_finds_a_chapter_for_flash(server, browser):
    visit = PageVisit(browser, f"{server}/search.html?q=flash")
    page = visit.page
    try:
        page.wait_for_selector("ul.search li a", timeout=30000)
        hits = page.evaluate("() => Array.from(document.querySelectorAll('ul.search li a')).map(a => a.href)")
        page.screenshot(path=str(SCREENSHOTS / "search-flash.png"))
    finally:
        visit.close()
    print(f"\nsearch 'flash': {len(hits)} results, e.g. {[urlparse(h).path for h in hits[:3]]}")
    assert not visit.errors, visit.errors
    chapters = [h for h in hits if re.search(r"/book/\d\d_[a-z0-9_]+\.html", h)]
    assert chapters, hits
