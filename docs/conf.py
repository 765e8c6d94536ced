"""Sphinx configuration of the diffcomb documentation.

Build (from the repository root, with the ``docs`` extra installed)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The tutorials in ``docs/tutorials/`` are executed at build time (sphinx-gallery); MathJax is
served from the site itself (the ``django-static-mathjax`` package ships it), so the pages render
math with no network.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import diffcomb
import diffcomb.losses
import diffcomb.nn

HERE = Path(__file__).resolve().parent

project = "diffcomb"
author = "diffcomb developers"
copyright = "diffcomb developers"
release = diffcomb.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "tutorials/README.txt", "_static/screenshots"]
templates_path = ["_templates"]
html_static_path: list[str] = []

# API reference: one page per public name, generated from the docstrings.
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False
python_use_unqualified_type_names = True

# Tutorials: executed at build time, one figure at least each.
sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_signature": False,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
    "capture_repr": ("_repr_html_",),
    "min_reported_time": 1,
    "write_computation_times": False,  # its page loads scripts from a CDN; the site stays offline
}

# MathJax from the site itself: copy the one bundle and its fonts out of the installed package.
_MATHJAX_OUT = HERE / "_build" / "mathjax_static"


def _local_mathjax() -> str:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("docs/conf.py: the 'django-static-mathjax' package is missing; "
                           "install the docs extra: pip install -e \".[docs]\"")
    es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    target = _MATHJAX_OUT / "mathjax"
    if not (target / "tex-chtml.js").exists():
        (target / "output" / "chtml").mkdir(parents=True, exist_ok=True)
        shutil.copy2(es5 / "tex-chtml.js", target / "tex-chtml.js")
        shutil.copytree(es5 / "output" / "chtml" / "fonts", target / "output" / "chtml" / "fonts",
                        dirs_exist_ok=True)
    return str(_MATHJAX_OUT)


html_static_path.append(_local_mathjax())
mathjax_path = "mathjax/tex-chtml.js"

html_theme = "furo"
html_title = f"diffcomb {release}"
html_show_sourcelink = False
html_theme_options = {
    "sidebar_hide_name": False,
    "navigation_with_keys": True,
}
pygments_style = "friendly"
pygments_dark_style = "monokai"


def public_names() -> set[str]:
    """Every public name: diffcomb.__all__, diffcomb.nn.__all__ (the same objects, listed under
    diffcomb) and the diffcomb.losses names not re-exported at the top level."""
    names = set(diffcomb.__all__) | set(diffcomb.nn.__all__)
    names |= {f"losses.{n}" for n in diffcomb.losses.__all__ if n not in diffcomb.__all__}
    return names


def _check_api_reference(app) -> None:
    """Fail the build when a public name is missing from the API reference (docs/api/*.rst lists
    each in an autosummary table), or when a listed name is not public."""
    listed: set[str] = set()
    for page in sorted((HERE / "api").glob("*.rst")):
        in_table = False
        for line in page.read_text().splitlines():
            if line.startswith(".. autosummary::"):
                in_table = True
                continue
            if in_table:
                if line.strip().startswith(":") or not line.strip():
                    continue
                if not line.startswith("   "):
                    in_table = False
                    continue
                listed.add(line.strip())
    expected = public_names()
    missing, extra = sorted(expected - listed), sorted(listed - expected)
    if missing or extra:
        from sphinx.errors import ExtensionError

        raise ExtensionError(f"docs/api: public names missing from the API reference: {missing}; "
                             f"listed but not public: {extra}")


def setup(app):
    app.connect("builder-inited", _check_api_reference)
    return {"parallel_read_safe": True}
