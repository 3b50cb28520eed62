"""The built book opened page by page in headless Chromium (``ibnb.book.browser_check``).

* ``test_checker_catches_broken_page``: a hand-made site whose page has a broken image, a myst-nb
  error output, a raw ``{glue}`` marker, a dead link, a missing anchor and untypeset math; each must be reported,
  and the clean page next to it must not be.
* ``test_book_in_browser`` (slow): the book built once per session by conftest's ``built_book``
  (the same build that ``test_book_builds_without_warnings`` checks) is served on localhost and every
  page is checked; screenshots of the landing page and the first chapter go to
  ``_build/screenshots/`` of this checkout (``IBNB_SCREENSHOTS`` overrides the folder).

Needs Debian's ``chromium`` (``apt-get install chromium``) and ``playwright`` from requirements.txt;
without them the tests fail with a message saying what to install (they are never skipped).
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from ibnb.book import browser_check

REPO = Path(__file__).resolve().parents[1]
# A 1x1 PNG, so that a working image sits next to the broken one.
PIXEL_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def require_browser() -> None:
    """Fail (not skip) with the fix when Chromium or Playwright is missing."""
    try:
        browser_check.find_chromium()
        import playwright.sync_api  # noqa: F401
    except browser_check.BrowserMissing as exc:
        pytest.fail(f"headless Chromium is needed for the browser test: {exc}")
    except ImportError as exc:
        pytest.fail(f"playwright is needed for the browser test ({exc}): `pip install -r requirements.txt`; "
                    f"Chromium itself: {browser_check.INSTALL_HINT}")


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1 id="top">{title}</h1>{body}</main></body></html>"""

GOOD_BODY = """<p>A figure: <img src="_images/ok.png" alt="ok"></p>
<p><a href="bad.html">the broken page</a>, <a href="#top">top</a>, <a href="bad.html#section">a section</a>,
<a href="https://example.org/">external (not checked)</a>, <a href="_sources/nb.ipynb">download</a></p>
<pre>glue("acc", 0.9) and the role {glue:}`acc` inside a code block are fine</pre>"""

# The error output imitates myst-nb's rendering of an ``error`` output (classes "output traceback").
BAD_BODY = """<h2 id="section">Section</h2>
<p><img src="_images/missing.png" alt="missing figure"></p>
<div class="cell docutils container"><div class="cell_output docutils container">
<div class="output traceback highlight-ipythontb notranslate"><div class="highlight"><pre>
---------------------------------------------------------------------------
ValueError                                Traceback (most recent call last)
Cell In[3], line 1
----&gt; 1 raise ValueError("boom")
ValueError: boom</pre></div></div></div></div>
<p>Test accuracy was {glue:}`test_acc` on the full set.</p>
<p>Untypeset math: <span class="math notranslate nohighlight">\\(x^2\\)</span></p>
<p><a href="does_not_exist.html">dead link</a> and <a href="index.html#no-such-anchor">missing anchor</a></p>"""


def make_site(root: Path) -> Path:
    html = root / "html"
    (html / "_images").mkdir(parents=True)
    (html / "_sources").mkdir()
    (html / "_images" / "ok.png").write_bytes(PIXEL_PNG)
    (html / "_sources" / "nb.ipynb").write_text("{}")
    (html / "index.html").write_text(PAGE.format(title="Good page", body=GOOD_BODY))
    (html / "bad.html").write_text(PAGE.format(title="Broken page", body=BAD_BODY))
    return html


def test_checker_catches_broken_page(tmp_path):
    require_browser()
    html = make_site(tmp_path)
    report = browser_check.check_site(html, screenshots=tmp_path / "shots", screenshot_pages=["bad.html"],
                                      require_math=True)
    print(report.summary())
    assert report.pages == ["bad.html", "index.html"]
    assert not [p for p in report.problems if p.page == "index.html"], report.summary()
    found = {(p.kind, p.detail.split(":")[0]) for p in report.problems if p.page == "bad.html"}
    details = "\n".join(p.detail for p in report.problems)
    expected = {
        "broken image": ("image", "image not loaded") in found and "missing.png" in details,
        "failed image request": any(p.kind == "request" and "missing.png" in p.detail for p in report.problems),
        "error output": ("error-output", "error output") in found and "ValueError: boom" in details,
        "raw glue marker": any(p.kind == "glue" and "{glue:}" in p.detail for p in report.problems),
        "dead link": any(p.kind == "link" and "does_not_exist.html" in p.detail for p in report.problems),
        "missing anchor": any(p.kind == "link" and "no-such-anchor" in p.detail for p in report.problems),
        "untypeset math": any(p.kind == "math" and p.page == "bad.html" for p in report.problems),
    }
    missed = [name for name, ok in expected.items() if not ok]
    assert not missed, f"the checker missed: {missed}\n{report.summary()}"
    assert report.screenshots and report.screenshots[0].stat().st_size > 0


@pytest.mark.slow
def test_book_in_browser(built_book):
    require_browser()
    if not (built_book.html / "index.html").is_file():
        pytest.fail("the book did not build (no _build/html/index.html); see test_book_builds_without_warnings:\n"
                    + built_book.log[-2000:])
    shots = Path(os.environ.get("IBNB_SCREENSHOTS", REPO / "_build" / "screenshots"))
    report = browser_check.check_site(built_book.html, screenshots=shots, require_math=True)  # MathJax is bundled
    print(report.summary())
    assert not report.problems, report.summary()
    assert any(p.startswith("book/experiments/") for p in report.pages), report.pages
    assert len(report.screenshots) == 2 and all(s.stat().st_size > 0 for s in report.screenshots)
    print("screenshots:", *report.screenshots)
