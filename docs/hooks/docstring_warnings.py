"""MkDocs hook: a docstring that griffe cannot parse fails the build.

``mkdocs build --strict`` does not count the warnings that griffe (mkdocstrings' docstring
parser) logs, so a malformed docstring -- a parameter that does not exist, prose read as a
parameter list -- would reach the API pages silently. This hook counts them and raises at the
end of the build, in strict and non-strict builds alike.
"""

from __future__ import annotations

import logging

from mkdocs.exceptions import PluginError


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_COUNTER = _Counter()


def on_config(config, **kwargs):
    _COUNTER.messages.clear()
    logger = logging.getLogger("mkdocs.plugins.griffe")
    if _COUNTER not in logger.handlers:
        logger.addHandler(_COUNTER)
    return config


def on_post_build(config, **kwargs) -> None:
    if _COUNTER.messages:
        listing = "\n  ".join(_COUNTER.messages[:20])
        count = len(_COUNTER.messages)
        raise PluginError(f"{count} docstring warning(s) from griffe:\n  {listing}")
