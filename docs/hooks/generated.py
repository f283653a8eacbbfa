"""MkDocs hook: replace ``<!-- generated: NAME -->`` markers with tables and listings
produced from the code's own declarations, so the docs cannot drift from the library."""

from __future__ import annotations

import importlib
import re

MARKER = re.compile(r"<!--\s*generated:\s*([a-z_]+)\s*-->")


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "generated:" not in markdown:
        return markdown
    gen = importlib.import_module("splitsde.apps.docs_tables")

    def replace(match: re.Match) -> str:
        name = match.group(1)
        fn = getattr(gen, name, None)
        if fn is None:
            raise KeyError(f"unknown generated block {name!r} in {page.file.src_path}")
        return fn()

    return MARKER.sub(replace, markdown)
