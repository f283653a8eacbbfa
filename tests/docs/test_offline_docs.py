"""The docs site renders offline: no script or stylesheet is loaded from another host."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _hook():
    spec = importlib.util.spec_from_file_location("mathjax_hook", ROOT / "docs/hooks/mathjax.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mkdocs_config_loads_nothing_from_the_network():
    text = (ROOT / "mkdocs.yml").read_text()
    assert not re.search(r"https?://", text.split("nav:")[0]), "external asset in mkdocs.yml"
    assert "js/mathjax/tex-mml-chtml.js" in text
    assert "docs/hooks/mathjax.py" in text


def test_mathjax_hook_copies_the_component_and_its_fonts(tmp_path):
    dest = _hook().copy_mathjax(tmp_path)
    script = dest / "tex-mml-chtml.js"
    assert script.stat().st_size > 500_000  # the whole TeX + MathML + CHTML component
    fonts = sorted((dest / "output/chtml/fonts/woff-v2").glob("*.woff"))
    assert {"MathJax_Main-Regular.woff", "MathJax_Math-Italic.woff"} <= {f.name for f in fonts}
