"""The built book opened page by page in headless Chromium (``ibnb.book.browser_check``).

* ``test_checker_catches_broken_page``: a hand-made site whose page has a broken image, a myst-nb
  error output, a raw ``{glue}`` marker, a dead link, a missing anchor and untypeset math; each must be reported,
  and the clean page next to it must not be.
* ``test_layout_checks_catch_broken_pages``: chapter pages with a too-wide table (inside the theme's scroll
  wrapper), a too-wide code block and image, images outside numbered captioned figures or not clickable, ``nan``,
  ``± 0.0`` and a glued object's repr in the text, and an answer box below the first screen or missing; each
  must be reported, and a clean chapter page (which loads the book's ``_static/ibnb.js``) must not be.
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

GOOD_BODY = """<figure id="fig-ok"><a href="_images/ok.png"><img src="_images/ok.png" alt="ok"></a>
<figcaption><p><span class="caption-number">Fig. 1 </span><span class="caption-text">A pixel.</span></p></figcaption>
</figure>
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


# A chapter page shaped like the theme's: a 688 px content column (article.bd-article) in a wider main.
CHAPTER = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>{head}</head>
<body><main style="width: 1000px"><article class="bd-article" role="main" style="width: 688px; padding: 0 10px">
<h1 id="top">{title}</h1>{body}</article></main></body></html>"""
ANSWER = """<div class="admonition tip ibnb-answer"><p class="admonition-title">Answer at this budget</p>
<p>2 claims audited: 1 supported.</p></div>"""
FIGURE = """<figure id="fig-{n}"><img src="../../_images/ok.png" alt="ok" style="width: 300px">
<figcaption><p><span class="caption-number">Fig. {n} </span><span class="caption-text">{caption}</span></p>
</figcaption></figure>"""
GOOD_CHAPTER = ANSWER + FIGURE.format(n=1, caption="Test accuracy, mean over 3 seeds.") + """
<div class="pst-scrollable-table-container"><table class="table"><tr><th>model</th><th>accuracy</th></tr>
<tr><td>cnn</td><td>+2.9 [1.1, 4.7] points, n = 3</td></tr></table></div>
<p>The interval is wide; the NaN-free table above fits.</p><pre>short code</pre>"""
BAD_CHAPTER = f"""<div style="height: 1200px">The question, at great length.</div>{ANSWER}
<div class="pst-scrollable-table-container" style="overflow-x: auto"><table style="width: 1500px">
<tr><th>a very wide table</th></tr><tr><td>x</td></tr></table></div>
<pre style="overflow-x: auto">{"x" * 400}</pre>
<p><img src="../../_images/ok.png" alt="loose" style="width: 900px; max-width: none"></p>
<figure><img src="../../_images/ok.png" alt="unnumbered"><figcaption><p>No number.</p></figcaption></figure>
{FIGURE.format(n=2, caption="Numbered, but nothing makes it open at full size.")}
<p>Accuracy was nan on the test set, 71.2 ± 0.0 over one seed, and &lt;IPython.core.display.Markdown object&gt;.</p>"""


def make_chapter_site(root: Path) -> Path:
    html = root / "html"
    chapters = html / "book" / "experiments"
    for d in (chapters, html / "_images", html / "_static"):
        d.mkdir(parents=True)
    (html / "_images" / "ok.png").write_bytes(PIXEL_PNG)
    (html / "_static" / "ibnb.js").write_text((REPO / "_static" / "ibnb.js").read_text())  # the book's own script
    script = '<script src="../../_static/ibnb.js"></script>'
    (html / "index.html").write_text(PAGE.format(title="Title page", body="<p>No answer box needed here.</p>"))
    (chapters / "01_good.html").write_text(CHAPTER.format(title="Good chapter", head=script, body=GOOD_CHAPTER))
    (chapters / "02_bad.html").write_text(CHAPTER.format(title="Bad chapter", head="", body=BAD_CHAPTER))
    (chapters / "03_no_answer.html").write_text(CHAPTER.format(title="No answer", head=script, body="<p>Text.</p>"))
    (chapters / "09_scorecard.html").write_text(CHAPTER.format(title="Synthesis", head=script, body="<p>Fine.</p>"))
    return html


def test_layout_checks_catch_broken_pages(tmp_path):
    require_browser()
    report = browser_check.check_site(make_chapter_site(tmp_path))
    print(report.summary())
    clean = [p for p in report.problems if not p.page.startswith(("book/experiments/02_", "book/experiments/03_"))]
    assert not clean, report.summary()
    bad = [p for p in report.problems if p.page == "book/experiments/02_bad.html"]

    def found(kind: str, *words: str) -> bool:
        return any(p.kind == kind and all(w in p.detail for w in words) for p in bad)

    expected = {
        "wide table in a scroll wrapper": found("width", "table is 1500 px"),
        "wide code block": found("width", "pre is"),
        "wide image": found("width", "img is 900 px"),
        "image outside a figure": found("figure", "not in a numbered figure"),
        "figure without a number": sum(p.kind == "figure" and "not in a numbered" in p.detail for p in bad) == 2,
        "image that does not open at full size": found("figure", "does not open at full size"),
        "nan": found("text", "'nan'"),
        "± 0.0": found("text", "'± 0.0'"),
        "glued object repr": found("glue", "IPython.core.display.Markdown"),
        "answer below the first screen": found("answer", "below the first screen"),
        "no answer box": any(p.kind == "answer" and p.page.endswith("03_no_answer.html") and "no answer box" in p.detail
                             for p in report.problems),
    }
    missed = [name for name, ok in expected.items() if not ok]
    assert not missed, f"the checker missed: {missed}\n{report.summary()}"
    assert all(p.kind == "width" and "px content column" in p.detail for p in bad if p.kind == "width")


def test_study_pages_are_the_numbered_chapters():
    assert browser_check.study_stem("01_architectures") and browser_check.study_stem("10_cpu_training")
    assert not any(map(browser_check.study_stem, ("00_index", "09_scorecard", "99_reproduce", "references")))


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
