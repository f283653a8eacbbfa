"""MkDocs hook: serve MathJax from the built site, so pages render formulas offline.

MathJax 3 comes from the ``django-static-mathjax`` wheel (installed with the ``docs`` extra; it
ships MathJax's static files and needs no Django). After the build, the one component the pages
load (``tex-mml-chtml.js``) and the CommonHTML web fonts it fetches relative to its own address
are copied under ``js/mathjax/`` of the site.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Where mkdocs.yml's ``extra_javascript`` points (relative to the site root).
TARGET = Path("js") / "mathjax"


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax distribution."""
    try:
        import mathjax
    except ImportError as exc:  # pragma: no cover - the docs extra installs it
        raise RuntimeError(
            "the docs serve MathJax locally: pip install 'splitsde[docs]' (django-static-mathjax)"
        ) from exc
    src = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (src / "tex-mml-chtml.js").is_file():  # pragma: no cover
        raise RuntimeError(f"no tex-mml-chtml.js under {src}")
    return src


def copy_mathjax(site_dir: str | Path) -> Path:
    """Copy the MathJax component and its fonts into ``site_dir``; return the target folder."""
    src = mathjax_source()
    dest = Path(site_dir) / TARGET
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
    fonts = Path("output") / "chtml" / "fonts" / "woff-v2"
    shutil.copytree(src / fonts, dest / fonts, dirs_exist_ok=True)
    return dest


def on_post_build(config, **kwargs) -> None:
    copy_mathjax(config["site_dir"])
