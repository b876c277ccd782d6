"""Sphinx configuration of the course's website (built by ``python -m helpers build-site DEST``).

The builder copies this folder, the solution notebooks (as ``lessons/``, with their stored outputs), the
learner notebooks (``_learner/``, for download), NOTATION.md, INSTRUCTORS.md and CONTRIBUTING.md into a
temporary tree and runs Sphinx on it. Nothing is fetched at build or view time: the notebooks are never
executed, the theme's assets ship in sphinx-book-theme's wheel and MathJax 3 in sphinx-mathjax-offline's.
"""

project = "Variational inference, from the ELBO to semi-implicit VI"
author = "the course's authors"
copyright = "the course's authors; code MIT, lesson text CC BY 4.0"

extensions = [
    "myst_nb",  # notebooks and MyST markdown
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax, mathjax_path set to it
    "sphinx.ext.githubpages",  # writes .nojekyll, so GitHub Pages serves _static/ as it is
]

root_doc = "index"
exclude_patterns = ["_build", "_learner", "alt_text.toml", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# The notebooks' stored outputs are the pages' outputs: never execute.
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3  # `lessons/04_amortized_inference.ipynb#1-one-encoder-for-every-data-point`
myst_dmath_double_inline = True

# MathJax 3 from the sphinx-mathjax-offline wheel (it sets the same path; stated here so no CDN default remains)
mathjax_path = "mathjax/tex-chtml.js"

html_theme = "sphinx_book_theme"
html_title = "Variational inference: from the ELBO to semi-implicit VI"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,  # a link to the source is on every lesson page and the landing page
    "navigation_with_keys": False,
    "search_bar_text": "Search the course...",
}
html_context = {"default_mode": "light"}  # the theme otherwise logs "invalid theme mode" on a first visit


def setup(app):
    # MathJax on every page, not only on pages with math: lesson titles in the navigation hold math too
    app.set_html_assets_policy("always")
