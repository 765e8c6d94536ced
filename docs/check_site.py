"""Check the built documentation site the way a reader meets it.

    python docs/check_site.py docs/_build/html [--screenshots DIR] [--require-browser]

1. Runs the ``.. code-block:: python`` blocks of the hand-written pages (docs/*.rst), each page's
   blocks in order in one namespace, so the site shows no example that does not run (the API
   pages' examples are doctests, run by tests/test_docs.py; the tutorials run at build time).
2. Checks the site's own links: every relative ``href`` / ``src`` of every page resolves to a file
   of the build, and every ``#fragment`` to an ``id`` of its page. Every public name has its API
   page and every tutorial page its figures.
3. Opens pages in headless Chromium (Debian's ``chromium``): the landing page, one API page and
   one tutorial. In each, after the page has loaded, MathJax must have typeset every formula
   (no raw TeX left, no MathJax error) and every image must have loaded; with ``--screenshots``,
   a PNG of each page goes there. Without Chromium this part is skipped with a message, or fails
   with ``--require-browser``.

Exit status 0 when every check passes; each failure is printed.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.parse
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BROWSER_PAGES = {  # label: (page, window height in CSS pixels for its screenshot)
    "landing": ("index.html", 1250),
    "api": ("api/generated/diffcomb.soft_rank.html", 1250),
    "tutorial": ("auto_tutorials/plot_2_soft_dtw.html", 3000),
}


class _Links(html.parser.HTMLParser):
    """The ids of a page and its relative links (tag, attribute value)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            value = a.get(key)
            if value and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", value):
                self.links.append((tag, value))


def run_code_blocks(failures: list[str]) -> int:
    """Run the python code blocks of docs/*.rst; returns how many ran."""
    ran = 0
    for page in sorted(DOCS.glob("*.rst")):
        blocks = re.findall(r"^\.\. code-block:: python\n\n((?:(?:    .*)?\n)+)", page.read_text(), re.M)
        namespace: dict = {"__name__": f"docs.{page.stem}"}
        for i, block in enumerate(blocks):
            code = textwrap.dedent(block)
            try:
                exec(compile(code, f"{page.name}[block {i + 1}]", "exec"), namespace)
                ran += 1
            except Exception as e:  # report every failing block, keep going
                failures.append(f"{page.name}: code block {i + 1} raised {type(e).__name__}: {e}")
    return ran


def check_links(site: Path, failures: list[str]) -> int:
    """Every relative link of every page resolves; returns how many links were checked."""
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    checked = 0
    for page, parsed in pages.items():
        for tag, value in parsed.links:
            url = urllib.parse.urlsplit(value)
            target = page if not url.path else (page.parent / urllib.parse.unquote(url.path)).resolve()
            checked += 1
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                failures.append(f"{page.relative_to(site)}: <{tag}> {value!r}: no such file in the site")
                continue
            if url.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if urllib.parse.unquote(url.fragment) not in ids:
                    failures.append(f"{page.relative_to(site)}: <{tag}> {value!r}: no id "
                                    f"{url.fragment!r} in {target.relative_to(site)}")
    return checked


def check_coverage(site: Path, failures: list[str]) -> None:
    """Every public name has its API page; every tutorial page shows its figures."""
    import diffcomb
    import diffcomb.losses
    import diffcomb.nn

    names = set(diffcomb.__all__) | set(diffcomb.nn.__all__)
    names |= {f"losses.{n}" for n in diffcomb.losses.__all__ if n not in diffcomb.__all__}
    for name in sorted(names):
        if not (site / "api" / "generated" / f"diffcomb.{name}.html").exists():
            failures.append(f"no API page for diffcomb.{name}")
    tutorials = sorted((DOCS / "tutorials").glob("plot_*.py"))
    if not tutorials:
        failures.append("no tutorials in docs/tutorials")
    for script in tutorials:
        page = site / "auto_tutorials" / f"{script.stem}.html"
        if not page.exists():
            failures.append(f"no page for the tutorial {script.name}")
            continue
        figures = [v for t, v in _parse(page).links if t == "img" and f"sphx_glr_{script.stem}_" in v]
        if not figures:
            failures.append(f"{page.relative_to(site)}: no figure")


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(errors="replace"))
    return parser


# Injected into a copy of a page: once the window has loaded and MathJax has typeset, write what
# the reader sees into the DOM (Chromium's --dump-dom then prints it).
_PROBE = """
<script>
window.addEventListener("load", function () {
  var ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
  ready.then(function () {
    var math = Array.from(document.querySelectorAll(".math"));
    var images = Array.from(document.images);
    var result = {
      title: document.title,
      math: math.length,
      typeset: math.filter(function (m) { return m.querySelector("mjx-container"); }).length,
      mathjax_errors: document.querySelectorAll("mjx-merror").length,
      images: images.length,
      broken_images: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                           .map(function (i) { return i.getAttribute("src"); }),
      mathjax_loaded: !!(window.MathJax && MathJax.version),
    };
    var out = document.createElement("pre");
    out.id = "site-check-result";
    out.style.display = "none";
    out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  });
});
</script>
"""


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="check-site-chromium-")
    try:
        return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                               "--virtual-time-budget=15000", *args],
                              capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def check_in_browser(site: Path, browser: str, screenshots: Path | None, failures: list[str]) -> None:
    for label, (rel, height) in BROWSER_PAGES.items():
        page = site / rel
        if not page.exists():
            failures.append(f"browser: {rel} is not in the site")
            continue
        probe = page.with_name(f".site-check-{page.name}")
        probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
        try:
            out = _chromium(browser, "--dump-dom", probe.as_uri())
        finally:
            probe.unlink()
        m = re.search(r'<pre id="site-check-result"[^>]*>(.*?)</pre>', out.stdout, re.S)
        if not m:
            failures.append(f"browser: {rel}: the page did not finish loading (rc {out.returncode}; "
                            f"{out.stderr.strip()[-300:]})")
            continue
        result = json.loads(html.unescape(m.group(1)))
        print(f"  {label:8s} {rel}: {result['math']} formulas, {result['typeset']} typeset by MathJax, "
              f"{result['images']} images, broken {len(result['broken_images'])}")
        if not result["mathjax_loaded"]:
            failures.append(f"browser: {rel}: MathJax did not load")
        if result["math"] == 0:
            failures.append(f"browser: {rel}: no math on the page")
        if result["typeset"] != result["math"] or result["mathjax_errors"]:
            failures.append(f"browser: {rel}: {result['math'] - result['typeset']} formulas not typeset, "
                            f"{result['mathjax_errors']} MathJax errors")
        if result["broken_images"]:
            failures.append(f"browser: {rel}: images that did not load: {result['broken_images']}")
        if label == "tutorial" and not any("sphx_glr_" in (s or "") for s in _img_sources(page)):
            failures.append(f"browser: {rel}: no figure")
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            shot = screenshots / f"{label}.png"
            _chromium(browser, f"--screenshot={shot}", f"--window-size=1400,{height}",
                      "--force-device-scale-factor=0.6", page.as_uri())
            if not shot.exists() or shot.stat().st_size < 10_000:
                failures.append(f"browser: no screenshot of {rel}")
            else:
                print(f"  screenshot {shot} ({shot.stat().st_size // 1024} KiB)")


def _img_sources(page: Path) -> list[str]:
    return [v for t, v in _parse(page).links if t == "img"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("site", type=Path, help="the built HTML site (docs/_build/html)")
    p.add_argument("--screenshots", type=Path, help="write a PNG of each page checked in the browser here")
    p.add_argument("--require-browser", action="store_true", help="fail when no Chromium is installed")
    args = p.parse_args()
    site = args.site.resolve()
    if not (site / "index.html").exists():
        print(f"check_site: {site} holds no built site (index.html)")
        return 1
    failures: list[str] = []
    print(f"code blocks of docs/*.rst: {run_code_blocks(failures)} ran")
    print(f"links inside the site: {check_links(site, failures)} checked")
    check_coverage(site, failures)
    browser = find_browser()
    if browser:
        print(f"browser: {browser}")
        check_in_browser(site, browser, args.screenshots, failures)
    elif args.require_browser:
        failures.append("no chromium on PATH (Debian: apt-get install chromium)")
    else:
        print("browser: no chromium on PATH; the rendering checks were skipped (Debian: apt-get install chromium)")
    for f in failures:
        print("FAILED:", f)
    print("check_site:", "all checks passed" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
