"""The website in a real browser: ``python tests/site_check.py [--site DIR] [--screenshots DIR]``.

Builds the website (``python -m helpers build-site``) into a temporary folder, unless ``--site`` names one
already built, serves it from a local HTTP server and opens every page in Debian's headless Chromium
(``apt-get install -y chromium``), driven by Playwright, with every request that does not go to the local
server blocked. On each page:

- the mathematics is typeset: MathJax has finished, left no error, and no raw ``$$``, ``\\(`` or ``\\[`` is left
  in the visible text outside code;
- every image has loaded (``naturalWidth > 0``) and has alternative text;
- every link to the site itself leads to an existing file, and to an existing anchor in it;
- the console shows no errors, and nothing outside the local server was requested.

Prints the counts (pages, formulas, images, links) and exits 0 when nothing failed, 1 otherwise. Run by
.ci/run after the test command (about a minute: too slow for the test command).
"""

import argparse
import functools
import html.parser
import http.server
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ("index.html", "lessons/01_elbo.html", "lessons/06_sivi.html")

# In the page: wait for MathJax, load every image now (not lazily), then report what the checks need.
INSPECT = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
    await Promise.all([...document.images].map(img => {
        img.loading = "eager";
        return img.decode().catch(() => null);
    }));
    const body = document.body.cloneNode(true);
    body.querySelectorAll("pre, code, script, style, mjx-container, .highlight").forEach(e => e.remove());
    return {
        mathjax: Boolean(document.querySelector('script[src*="mathjax"]')),
        formulas: document.querySelectorAll("mjx-container").length,
        math_errors: document.querySelectorAll("mjx-merror").length,
        text: body.innerText,
        images: [...document.images].map(img => ({src: img.src, width: img.naturalWidth, alt: img.alt})),
        links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    };
}"""


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name in ("id", "name") and value)


@functools.cache
def _ids(path):
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser.ids


def _serve(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def check_site(site, screenshots=None):
    from playwright.sync_api import sync_playwright

    site = Path(site).resolve()
    server = _serve(site)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if "_static" not in p.parts)
    problems, blocked, counts = [], [], {"pages": 0, "formulas": 0, "images": 0, "links": 0}

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with tempfile.TemporaryDirectory(prefix="vi-course-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900}
        )
        context.route("**/*", route)
        for name in pages:
            page = context.new_page()
            console = []
            page.on("console", lambda m, c=console: c.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, c=console: c.append(str(e)))
            page.on("requestfailed", lambda r, c=console: c.append(f"request failed: {r.url}"))
            page.goto(base + name, wait_until="load")
            info = page.evaluate(INSPECT)
            counts["pages"] += 1
            counts["formulas"] += info["formulas"]
            where = f"{name}:"
            for raw in ("$$", "\\(", "\\[", "\\begin{"):
                if raw in info["text"]:
                    at = info["text"].index(raw)
                    problems.append(
                        f"{where} raw math {raw!r} in the text: ...{info['text'][max(0, at - 60) : at + 60]!r}"
                    )
            if info["math_errors"]:
                problems.append(f"{where} {info['math_errors']} MathJax errors")
            for img in info["images"]:
                counts["images"] += 1
                if img["width"] == 0:
                    problems.append(f"{where} image did not load: {img['src']}")
                if not img["alt"].strip() and "_images/" in img["src"]:
                    problems.append(f"{where} figure without alternative text: {img['src']}")
            for href in info["links"]:
                if not href.startswith(base):
                    continue
                counts["links"] += 1
                url, fragment = urldefrag(href)
                target = site / unquote(urlparse(url).path).lstrip("/")
                if target.is_dir():
                    target = target / "index.html"
                if not target.is_file():
                    problems.append(f"{where} broken link {href}")
                elif fragment and target.suffix == ".html" and unquote(fragment) not in _ids(target):
                    problems.append(f"{where} link to a missing anchor {href}")
            problems.extend(f"{where} console: {line}" for line in console)
            if screenshots and name in SCREENSHOTS:
                out = Path(screenshots)
                out.mkdir(parents=True, exist_ok=True)
                stem = name.replace("/", "_").removesuffix(".html")
                page.screenshot(path=str(out / f"{stem}.png"))
                figure = page.locator("img[src*='_images/']").first
                if figure.count():
                    figure.scroll_into_view_if_needed()
                    page.screenshot(path=str(out / f"{stem}_figure.png"))
            page.close()
        context.close()
    server.shutdown()
    problems.extend(f"request outside the site, blocked: {url}" for url in sorted(set(blocked)))
    return counts, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="an already built website (default: build one now)")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save the landing page and two lessons")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vi-course-site-check-") as tmp:
        site = args.site
        if site is None:
            sys.path.insert(0, str(ROOT))
            from helpers.tooling.site import build_site

            site = Path(tmp) / "site"
            if build_site(ROOT, site) != 0:
                print("site_check: the website did not build")
                return 1
        counts, problems = check_site(site, args.screenshots)
    print(
        f"site_check: {counts['pages']} pages, {counts['formulas']} typeset formulas, {counts['images']} images, "
        f"{counts['links']} internal links checked in headless Chromium, network blocked"
    )
    for line in problems:
        print(f"  FAILED {line}")
    print("site_check: passed" if not problems else f"site_check: {len(problems)} problems")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
