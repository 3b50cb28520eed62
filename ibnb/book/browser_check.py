"""Check a built Jupyter Book in a real browser (headless Chromium driven by Playwright).

``check_site(html_dir)`` serves ``html_dir`` on ``127.0.0.1`` (``http.server`` in a thread, free
port), opens every ``*.html`` page except the theme's ``_static`` snippets, and reports per page:

* **images**: every ``<img>`` has loaded with ``naturalWidth > 0``; same-site requests (images, CSS,
  JS) that fail or answer HTTP >= 400;
* **error outputs**: myst-nb error outputs (``.output.traceback``, ``.output.error``), stderr outputs
  naming an ``...Error:`` / ``...Exception:``, and the text ``Traceback (most recent call last)``;
  uncaught JavaScript exceptions;
* **glue**: a raw ``{glue}`` / ``{glue:...}`` role in the rendered text (outside code blocks), i.e. a
  glued value that was not substituted;
* **links**: every same-site ``href`` points to a file that exists (a folder needs ``index.html``),
  and its ``#anchor``, if any, is an element id (or ``<a name>``) of the target page;
* **width** (at 1280 × 800): no table, image, code block, figure, output or display equation is wider than the
  content column (``article.bd-article``) or sticks out of it; a table inside the theme's horizontally
  scrollable wrapper still counts as too wide;
* **figure**: every image of the content is inside a numbered figure (``<figure>`` whose ``<figcaption>``
  says "Fig. N" and has a caption text), and opens at full size on click (inside a link to its file;
  ``_static/ibnb.js`` adds it);
* **text**: no ``nan``, ``± 0.0``, raw glue (``{glue:...}``, a glued object's repr such as
  ``<IPython.core.display.Markdown object>`` or ``<Figure size ...>``) in the rendered text outside code;
* **answer**: each study chapter (:func:`study_stem`) shows its *answer at this budget* box (class
  ``ibnb-answer``) in its first screen, the top 800 px.

Requests to other hosts are aborted (the check runs offline and does not wait for CDNs), so
external links and CDN scripts are not checked (this book serves MathJax itself, so its math is
checked with ``require_math=True``).  Chromium is found through
``IBNB_CHROMIUM`` or on ``PATH`` (Debian's ``chromium``); Playwright never downloads a browser.

Command line: ``python -m ibnb.book.browser_check _build/html [--screenshots DIR]``.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("install it with `sudo apt-get install chromium` (Debian/Ubuntu), or point IBNB_CHROMIUM at a "
                "Chromium/Chrome binary; the Python driver comes from requirements.txt (`pip install playwright`)")
# Offline machines refuse Chromium's background connections (updates, sync, field trials): switch them off.
CHROMIUM_ARGS = ("--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--no-first-run", "--disable-gpu")
GLUE_RE = re.compile(r"\{glue(?::[a-z]*)?\}|<IPython\.core\.display\.\w+ object>|<Figure size [^>]*>"
                     r"|<matplotlib\.[\w.]+ object at 0x[0-9a-f]+>")
NAN_RE = re.compile(r"(?<![\w.-])nan(?![\w-])", re.I)
ZERO_SPREAD_RE = re.compile(r"±\s*0(?:\.0+)?(?![\d.])")
VIEWPORT = {"width": 1280, "height": 800}
ANSWER_CLASS = "ibnb-answer"  # the class of ibnb.book.page.answer_box's admonition
SYNTHESIS = {"00", "09", "99"}
META_REFRESH_RE = re.compile(r'<meta[^>]+http-equiv="refresh"', re.I)
# Uncaught JavaScript errors that are known and harmless. sphinx-thebe 0.3.1 (pulled in by Jupyter Book
# 1.x even with thebe off) emits its config <script> twice, so the second `const` declaration throws.
KNOWN_JS_ERRORS = (re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),)
STDERR_ERROR_RE = re.compile(r"\b\w*(?:Error|Exception):")


def study_stem(stem: str) -> bool:
    """A study chapter (``01``–``08``, ``10``, …: every numbered page but the title, scorecard and reproduce
    pages) must open with its answer box."""
    return bool(re.match(r"\d\d_", stem)) and stem[:2] not in SYNTHESIS


class BrowserMissing(RuntimeError):
    """No Chromium binary or no Playwright: the message says how to install it."""


@dataclass
class Problem:
    page: str
    kind: str  # image | request | error-output | javascript | glue | link | math | width | figure | text | answer
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: [{self.kind}] {self.detail}"


@dataclass
class SiteReport:
    pages: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unrendered_math: list[str] = field(default_factory=list)  # pages whose TeX was not typeset
    links_checked: int = 0
    images_checked: int = 0
    screenshots: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def summary(self) -> str:
        head = (f"{len(self.pages)} pages, {self.images_checked} images, {self.links_checked} same-site links "
                f"checked in {self.seconds:.1f} s: {len(self.problems)} problem(s)")
        lines = [head, *("  " + str(p) for p in self.problems)]
        if self.unrendered_math:
            lines.append(f"  note: math not typeset on {len(self.unrendered_math)} page(s) (MathJax not loaded, "
                         f"e.g. taken from a CDN, which this offline check blocks): {', '.join(self.unrendered_math)}")
        return "\n".join(lines)


def find_chromium() -> str:
    """Path of a Chromium binary (``IBNB_CHROMIUM`` first, then ``PATH``); raises ``BrowserMissing``."""
    env = os.environ.get("IBNB_CHROMIUM")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return env
        raise BrowserMissing(f"IBNB_CHROMIUM={env} is not an executable file; {INSTALL_HINT}")
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing(f"no Chromium found on PATH (looked for {', '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}")


def html_pages(root: Path) -> list[str]:
    """Site-relative paths of the book's HTML pages (theme snippets under ``_static`` excluded)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if not p.relative_to(root).parts[0].startswith(("_static", "_sources")))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on stderr
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The browser drops connections it no longer needs (page closed mid-transfer): not an error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@contextmanager
def serve(root: Path):
    """Serve ``root`` on 127.0.0.1 at a free port in a daemon thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# Runs in the page: make lazy images load, wait for them, then collect everything the checks need.
_PAGE_JS = r"""
async (answerClass) => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r, {once: true}); i.addEventListener('error', r, {once: true});
    setTimeout(r, 5000);
  })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, 10000))]);
  }
  // the content column, and what is wider than it or sticks out of it (outermost element only)
  const art = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const ar = art.getBoundingClientRect(), cs = getComputedStyle(art);
  const left = ar.left + parseFloat(cs.paddingLeft), right = ar.right - parseFloat(cs.paddingRight);
  const wide = [];
  art.querySelectorAll('table, img, pre, figure, iframe, video, .cell_output, mjx-container[display="true"]')
    .forEach(e => {
      if (e.closest('aside, .margin') || wide.some(w => w.el.contains(e))) return;
      const r = e.getBoundingClientRect();
      if (!r.width && !r.height) return;
      const w = Math.max(r.width, e.scrollWidth);
      if (w > right - left + 2 || r.right > right + 2 || r.left < left - 2)
        wide.push({el: e, tag: e.tagName.toLowerCase(), width: Math.round(w),
                   what: (e.getAttribute('src') || e.innerText || '').trim().replace(/\s+/g, ' ').slice(0, 60)});
    });
  const figures = Array.from(art.querySelectorAll('img')).filter(i => !i.closest('aside, .margin')).map(i => {
    const f = i.closest('figure'), cap = f && f.querySelector('figcaption');
    const text = cap ? cap.innerText.trim() : '', a = i.closest('a[href]');
    return {src: i.getAttribute('src') || '', figure: !!f, numbered: /^Fig\.\s?\d+(\.\d+)*/.test(text),
            captioned: text.replace(/^Fig\.\s?[\d.]+\s*/, '').length > 0, linked: !!a && a.href === i.src};
  });
  const box = document.querySelector('.' + answerClass);
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, textarea').forEach(e => e.remove());
  const stderr = Array.from(document.querySelectorAll('.output.stderr')).map(e => e.innerText);
  return {
    images: imgs.map(i => ({src: i.getAttribute('src') || '', url: i.currentSrc || i.src,
                            ok: i.complete && i.naturalWidth > 0})),
    errors: Array.from(document.querySelectorAll('.output.traceback, .output.error'))
                 .map(e => e.innerText.trim().split('\n').filter(Boolean).slice(-1)[0] || e.className),
    stderr: stderr,
    hasTraceback: document.body.innerText.includes('Traceback (most recent call last)'),
    text: body.innerText,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => ({raw: a.getAttribute('href'), url: a.href})),
    math: document.querySelectorAll('.math').length,
    mathRendered: document.querySelectorAll('mjx-container, .katex').length,
    column: Math.round(right - left), wide: wide.map(({el, ...w}) => w), figures: figures,
    answerTop: box ? Math.round(box.getBoundingClientRect().top + window.scrollY) : null,
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id)
           .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.getAttribute('name'))),
  };
}
"""


def _target_file(root: Path, path: str) -> Path:
    rel = unquote(path).lstrip("/")
    target = root / rel
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target


def _ids_from_file(path: Path) -> set[str]:
    text = path.read_text(errors="replace")
    return set(re.findall(r'\bid="([^"]*)"', text)) | set(re.findall(r'<a[^>]*\bname="([^"]*)"', text))


def _snippet(text: str, i: int) -> str:
    return text[max(0, i - 60): i + 60].replace("\n", " ")


def layout_problems(rel: str, info: dict, height: int = VIEWPORT["height"]) -> list[Problem]:
    """The page-shape checks on what :data:`_PAGE_JS` collected: width, figures, text, the answer box."""
    out = [Problem(rel, "width", f"{w['tag']} is {w['width']} px wide or outside the {info['column']} px content "
                   f"column: {w['what']!r}") for w in info["wide"]]
    for f in info["figures"]:
        if not (f["figure"] and f["numbered"] and f["captioned"]):
            out.append(Problem(rel, "figure", f"image {f['src']!r} is not in a numbered figure with a caption"))
        elif not f["linked"]:
            out.append(Problem(rel, "figure", f"image {f['src']!r} does not open at full size on click"))
    text = info["text"]
    for name, rx in (("nan", NAN_RE), ("± 0.0", ZERO_SPREAD_RE), ("glue", GLUE_RE)):
        for m in list(rx.finditer(text))[:3]:
            kind = "glue" if name == "glue" else "text"
            out.append(Problem(rel, kind, f"raw {m.group(0)!r} in the text: ...{_snippet(text, m.start())}..."))
    stem = Path(rel).stem
    if rel.startswith("book/experiments/") and study_stem(stem):
        top = info["answerTop"]
        if top is None:
            out.append(Problem(rel, "answer", f"no answer box (class {ANSWER_CLASS!r}) on the page"))
        elif top >= height:
            out.append(Problem(rel, "answer", f"the answer box starts at {top} px, below the first screen "
                                              f"({height} px)"))
    return out


def check_site(root: Path | str, screenshots: Path | str | None = None, screenshot_pages: list[str] | None = None,
               timeout_ms: int = 30_000, require_math: bool = False) -> SiteReport:
    """Open every page of the built site ``root`` in headless Chromium; return the problems found.

    ``screenshots``: folder for PNG screenshots of ``screenshot_pages`` (default: the landing page
    ``index.html`` and the first page under ``book/experiments/``).
    ``require_math``: report TeX that MathJax did not typeset as a problem (kind ``math``); by default
    it is only listed in ``SiteReport.unrendered_math``. This book bundles MathJax (sphinx-mathjax-offline), and
    its test sets ``require_math=True``.
    """
    root = Path(root).resolve()
    if not (root / "index.html").is_file():
        raise FileNotFoundError(f"{root}/index.html does not exist: build the book first")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BrowserMissing(f"the Python package playwright is missing ({exc}); `pip install -r requirements.txt`"
                             f" installs it. Chromium itself: {INSTALL_HINT}") from None
    chromium = find_chromium()
    pages = html_pages(root)
    if screenshot_pages is None:  # the landing page and the first chapter that is not the landing page itself
        landing = re.search(r'http-equiv="refresh"[^>]*url=([^"\'>]+)', (root / "index.html").read_text(errors="replace"), re.I)
        landing_page = landing.group(1).lstrip("./") if landing else "index.html"
        chapters = [p for p in pages if p.startswith("book/experiments/") and p != landing_page]
        screenshot_pages = ["index.html", *chapters[:1]]
    report = SiteReport(pages=pages)
    ids: dict[str, set[str]] = {}
    links: list[tuple[str, str, str]] = []  # (page, raw href, absolute url)
    t0 = time.perf_counter()
    with serve(root) as base, sync_playwright() as pw:
        origin = base.rstrip("/")
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS))
        try:
            context = browser.new_context(viewport=VIEWPORT)
            # Offline and fast: only this server is reachable.
            context.route(re.compile(r"^(?!" + re.escape(origin) + r"/).*"), lambda route: route.abort())
            for rel in pages:
                page = context.new_page()
                bad_requests: list[str] = []
                js_errors: list[str] = []
                page.on("response", lambda r, bad=bad_requests: bad.append(f"HTTP {r.status} {r.url}")
                        if r.url.startswith(origin) and r.status >= 400 else None)
                page.on("requestfailed", lambda r, bad=bad_requests: bad.append(f"failed {r.url} ({r.failure})")
                        if r.url.startswith(origin) else None)
                page.on("pageerror", lambda e, errs=js_errors: errs.append(str(e)))
                page.goto(base + rel, wait_until="load", timeout=timeout_ms)
                if META_REFRESH_RE.search((root / rel).read_text(errors="replace")[:4000]):
                    # e.g. the root index.html of a jb-book: follow the redirect before inspecting.
                    page.wait_for_url(lambda u, rel=rel: urlsplit(u).path.lstrip("/") != rel, timeout=timeout_ms)
                    page.wait_for_load_state("load", timeout=timeout_ms)
                info = page.evaluate(_PAGE_JS, ANSWER_CLASS)
                final = urlsplit(page.url).path.lstrip("/")  # index.html redirects to book/index.html
                ids[rel] = set(info["ids"])
                if final != rel:
                    ids.setdefault(final, set(info["ids"]))
                for img in info["images"]:
                    report.images_checked += 1
                    if not img["ok"]:
                        report.problems.append(Problem(rel, "image", f"image not loaded: {img['src']!r}"))
                for req in dict.fromkeys(bad_requests):
                    report.problems.append(Problem(rel, "request", req))
                for err in js_errors:
                    if any(known.search(err) for known in KNOWN_JS_ERRORS):
                        continue
                    report.problems.append(Problem(rel, "javascript", err[:300]))
                for err in info["errors"]:
                    report.problems.append(Problem(rel, "error-output", f"error output: {err[:300]}"))
                for text in info["stderr"]:
                    if STDERR_ERROR_RE.search(text):
                        report.problems.append(Problem(rel, "error-output", f"stderr output: {text.strip()[-300:]}"))
                if info["hasTraceback"] and not info["errors"]:
                    report.problems.append(Problem(rel, "error-output", "page shows 'Traceback (most recent call last)'"))
                report.problems += layout_problems(rel, info)
                if info["math"] and not info["mathRendered"]:
                    report.unrendered_math.append(rel)
                    if require_math:
                        report.problems.append(Problem(rel, "math", f"{info['math']} math element(s) not typeset"))
                links += [(rel, link["raw"], link["url"]) for link in info["links"]]
                if screenshots is not None and rel in screenshot_pages:
                    out = Path(screenshots) / (rel.replace("/", "_").removesuffix(".html") + ".png")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(out), full_page=(rel == "index.html"))
                    report.screenshots.append(out)
                page.close()
        finally:
            browser.close()
        for rel, raw, url in links:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not url.startswith(origin + "/"):
                continue  # external, mailto:, javascript:
            report.links_checked += 1
            target = _target_file(root, parts.path)
            if not target.is_file():
                report.problems.append(Problem(rel, "link", f"dead link {raw!r}: {target.relative_to(root)} does not exist"))
                continue
            anchor = unquote(parts.fragment)
            if not anchor or target.suffix != ".html":
                continue
            key = target.relative_to(root).as_posix()
            if key not in ids:
                ids[key] = _ids_from_file(target)
            if anchor not in ids[key]:
                report.problems.append(Problem(rel, "link", f"link {raw!r}: no element with id {anchor!r} in {key}"))
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ibnb.book.browser_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("html", nargs="?", default="_build/html", help="built site (default: _build/html)")
    ap.add_argument("--screenshots", default=None, help="folder for screenshots (default: <html>/../screenshots)")
    ap.add_argument("--require-math", action="store_true", help="report math that MathJax did not typeset")
    args = ap.parse_args(argv)
    html = Path(args.html)
    shots = Path(args.screenshots) if args.screenshots else html.resolve().parent / "screenshots"
    report = check_site(html, screenshots=shots, require_math=args.require_math)
    print(report.summary())
    for s in report.screenshots:
        print(f"screenshot: {s}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
