"""The course's website: ``python -m helpers build-site DEST``.

A thin wrapper over Sphinx with myst-nb. It lays out a temporary source tree and builds HTML from it:

- ``site/`` (``conf.py``, the landing page, the question page, the instructor's guide, static files);
- ``lessons/NN_name.ipynb``: a copy of each *solution* notebook with its stored outputs (never executed), with
  the alternative text of its figures from ``site/alt_text.toml`` in the copied cells' metadata, a row of links
  under its title (the learner notebook to download, Colab, Binder, the source), and nbgrader's marker lines
  taken out of its written answers;
- ``_learner/``: the learner notebooks, offered for download;
- NOTATION.md, INSTRUCTORS.md and CONTRIBUTING.md as they are, except that a relative link to a file that is not
  on the website points at the file in the course's source repository.

The landing page's quick start and lesson map are read from README.md, so the two never disagree. Nothing is
written inside ``solutions/`` or ``lessons/``; nothing is fetched over the network.
"""

import os
import re
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import nbformat

from ..exercise_format import BEGIN, END
from .links import binder_url, colab_url, notebook_url, source_url
from .notebook_io import read_notebook, write_notebook

__all__ = ["build_site", "figure_cells", "lesson_map", "quick_start", "alt_texts"]

PAGES = ("NOTATION.md", "INSTRUCTORS.md", "CONTRIBUTING.md")  # copied from the repository's top
_LINK = re.compile(r"(?<!\!)\[([^\]]*)\]\(([^)\s]+)\)")  # a markdown link (not an image)


def figure_cells(nb):
    """Ids of the code cells of notebook ``nb`` whose stored outputs hold an image."""
    return [
        cell.id
        for cell in nb.cells
        if cell.cell_type == "code"
        and any(k.startswith("image/") for o in cell.get("outputs", []) for k in o.get("data", {}))
    ]


def alt_texts(root):
    """``{notebook file name: {cell id: alternative text}}`` from ``site/alt_text.toml``."""
    return tomllib.loads((Path(root) / "site" / "alt_text.toml").read_text(encoding="utf-8"))


def _readme(root):
    return (Path(root) / "README.md").read_text(encoding="utf-8")


def quick_start(root):
    """The README's quick-start code block (the install and the test command), as it is."""
    section = _readme(root).split("## Quick start", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()


def lesson_map(root):
    """``[(lesson file name, what you learn)]`` from the README's lesson map table."""
    section = _readme(root).split("## Lesson map", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| \[`(\d\d_\w+)`\]\([^)]*\)[^|]*\| (.*?) \|\s*$", section, re.M)
    if not rows:
        raise ValueError("README.md: no lesson map rows found under '## Lesson map'")
    return [(f"{name}.ipynb", learn) for name, learn in rows]


def _title(nb):
    first = nb.cells[0].source.splitlines()[0]
    return first.lstrip("# ").strip()


def _rewrite_links(text, here, site_files, root, repo_dir, site):
    """Point relative links to files that are not on the website at the source repository."""

    def fix(match):
        label, target = match.groups()
        if re.match(r"^[a-z]+:|^#|^mailto:", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        on_site = (here.parent / path).resolve()
        if on_site in site_files:
            return match.group(0)
        in_repo = (repo_dir / path).resolve()
        try:
            relative = in_repo.relative_to(Path(root).resolve())
        except ValueError:
            return match.group(0)
        page = site / "lessons" / relative.name
        if relative.parent.as_posix() not in ("solutions", "lessons"):
            page = site / relative.as_posix()  # a page copied from the repository (NOTATION.md, ...)
        if page.resolve() in site_files:  # on the website: a lesson (learner or solution version), or a page
            link = Path(os.path.relpath(page, here.parent)).as_posix()
            return f"[{label}]({link}" + (f"#{anchor})" if anchor else ")")
        url = f"{source_url(root)}/blob/main/{relative.as_posix()}" + (f"#{anchor}" if anchor else "")
        return f"[{label}]({url})"

    return _LINK.sub(fix, text)


def _strip_markers(source):
    return "\n".join(line for line in source.splitlines() if line.strip() not in (BEGIN, END))


def _lesson_links(name, root):
    return (
        ":::{container} course-links\n"
        f"{{download}}`Learner notebook {name} <../_learner/{name}>`\n"
        f"[Open in Colab]({colab_url(name, root)})\n"
        f"[Launch on Binder]({binder_url(name, root)})\n"
        f"[Learner notebook on GitHub]({notebook_url('lessons', name, root)})\n"
        ":::\n\n"
        "This page is the *solution* notebook with its stored outputs. To work through the lesson, open the "
        "learner notebook above (exercises as stubs, no outputs) in JupyterLab, Colab or Binder."
    )


def _lay_out(root, src):
    """Write the Sphinx source tree into ``src``; return the lessons' file names."""
    root = Path(root)
    shutil.copytree(root / "site", src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "lessons").mkdir()
    (src / "_learner").mkdir()
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    names = [p.name for p in solutions]
    site_files = {(src / "lessons" / n).resolve() for n in names} | {(src / p).resolve() for p in PAGES}
    site_files |= {p.resolve() for p in src.glob("*.md")}
    alts = alt_texts(root)
    for path in solutions:
        nb = read_notebook(path)
        missing = [cid for cid in figure_cells(nb) if cid not in alts.get(path.name, {})]
        if missing:
            raise ValueError(f"site/alt_text.toml: no alternative text for {path.name} cells {missing}")
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.id in alts.get(path.name, {}):
                cell.metadata.setdefault("mystnb", {})["image"] = {"alt": alts[path.name][cell.id]}
            elif cell.cell_type == "markdown":
                text = _strip_markers(cell.source) if BEGIN in cell.source else cell.source
                cell.source = _rewrite_links(
                    text, src / "lessons" / path.name, site_files, root, root / "solutions", src
                )
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(_lesson_links(path.name, root), id="site-links"))
        write_notebook(nb, src / "lessons" / path.name)
        shutil.copy2(root / "lessons" / path.name, src / "_learner" / path.name)
    for page in PAGES:
        text = (root / page).read_text(encoding="utf-8")
        (src / page).write_text(_rewrite_links(text, src / page, site_files, root, root, src), encoding="utf-8")
    for page in (root / "site").glob("*.md"):
        text = (src / page.name).read_text(encoding="utf-8")
        (src / page.name).write_text(_rewrite_links(text, src / page.name, site_files, root, page.parent, src), "utf-8")
    titles = {p.name: _title(read_notebook(p)) for p in solutions}
    rows = ["| lesson | what you learn |", "|---|---|"]
    for name, learn in lesson_map(root):
        rows.append(f"| [{titles[name]}](lessons/{name}) | {learn} |")
    index = (src / "index.md").read_text(encoding="utf-8")
    index = index.replace("{{ quick_start }}", quick_start(root))
    index = index.replace("{{ lesson_map }}", "\n".join(rows))
    index = index.replace("{{ source_url }}", source_url(root))
    index = index.replace("{{ binder_url }}", binder_url(root=root))
    (src / "index.md").write_text(index, encoding="utf-8")
    return names


def build_site(root, dest, quiet=True):
    """Build the website from ``root`` into ``dest`` (a folder, replaced); return an exit status."""
    try:
        from sphinx.cmd.build import build_main
    except ImportError:
        print(
            "python -m helpers build-site: error: Sphinx is not installed; install the site extra first: "
            '.venv/bin/pip install -e ".[site]"',
            file=sys.stderr,
        )
        return 2
    root, dest = Path(root).resolve(), Path(dest).resolve()
    for inside in ("solutions", "lessons"):
        if dest == root / inside or (root / inside) in dest.parents:
            print(f"python -m helpers build-site: error: {dest} is inside {inside}/", file=sys.stderr)
            return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vi-course-site-") as tmp:
        src = Path(tmp) / "src"
        try:
            _lay_out(root, src)
        except ValueError as exc:
            print(f"python -m helpers build-site: error: {exc}", file=sys.stderr)
            return 1
        if dest.exists():
            shutil.rmtree(dest)
        args = ["-b", "html", "-n", "-W", "--keep-going", "-d", str(Path(tmp) / "doctrees"), str(src), str(dest)]
        status = build_main((["-q"] if quiet else []) + args)
    if status == 0:
        pages = len(list(dest.rglob("*.html")))
        print(f"website written to {dest} ({pages} HTML files, {time.perf_counter() - start:.0f} s)")
    return status
