"""Every public address of the course, derived from the one place it is set.

The course's source address is ``[project.urls] Source`` in ``pyproject.toml`` and nowhere else. From it come
the archive that a lesson run outside the repository installs (the first code cell of every solution, rendered
by :func:`install_cell_source`), the Binder and Colab links of the README and the website, and the address of
each learner notebook on the website.
"""

import tomllib
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "INSTALL_CELL_ID",
    "source_url",
    "archive_url",
    "install_cell_source",
    "binder_url",
    "colab_url",
    "notebook_url",
    "BINDER_BADGE",
    "COLAB_BADGE",
]

ROOT = Path(__file__).resolve().parents[2]
INSTALL_CELL_ID = "install-course"  # the first code cell of every solution (and so of every lesson)
BRANCH = "main"  # the branch the links and the archive point at
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def source_url(root=ROOT):
    """The course's source repository, ``https://github.com/OWNER/NAME``, from ``[project.urls] Source``."""
    project = tomllib.loads((Path(root) / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    url = project["urls"]["Source"].rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme != "https" or parsed.netloc != "github.com" or len(parsed.path.strip("/").split("/")) != 2:
        raise ValueError(f"[project.urls] Source must read https://github.com/OWNER/NAME, not {url!r}")
    return url


def _owner_name(root):
    return urlparse(source_url(root)).path.strip("/")


def archive_url(root=ROOT):
    """The zip archive of the course's branch, which pip installs as the ``vi-course`` package (data included)."""
    return f"{source_url(root)}/archive/refs/heads/{BRANCH}.zip"


def install_cell_source(root=ROOT):
    """The text of the first code cell of every lesson: install the course where ``helpers`` is not importable.

    Inside the repository (or an environment where the course is installed) the cell does nothing; on Colab, or
    wherever a lesson is opened on its own, it installs the course's package with its data from
    :func:`archive_url`.
    """
    return (
        "# Outside the course's repository (on Colab, say) this installs the course's package; here it does nothing.\n"
        "import importlib.util\n"
        "\n"
        'if importlib.util.find_spec("helpers") is None:\n'
        f'    %pip install -q "vi-course @ {archive_url(root)}"\n'
        "    importlib.invalidate_caches()"
    )


def binder_url(lesson=None, root=ROOT):
    """Binder, built from ``environment.yml``, opening JupyterLab on ``lessons/`` (or on one lesson's file)."""
    path = f"lessons/{lesson}" if lesson else "lessons"
    return f"https://mybinder.org/v2/gh/{_owner_name(root)}/{BRANCH}?urlpath=lab/tree/{path}"


def colab_url(lesson, root=ROOT):
    """Colab, opening the learner notebook ``lessons/<lesson>`` (an ``.ipynb`` file name)."""
    return f"https://colab.research.google.com/github/{_owner_name(root)}/blob/{BRANCH}/lessons/{lesson}"


def notebook_url(folder, name, root=ROOT):
    """The page of ``folder/name`` (say ``lessons``, ``01_elbo.ipynb``) in the source repository."""
    return f"{source_url(root)}/blob/{BRANCH}/{folder}/{name}"
