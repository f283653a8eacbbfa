"""Progress bars for long work: shown on a terminal, silent otherwise.

One helper for every long-running loop of the library and the command line (the time loop of
:func:`splitsde.integrate`, sampler comparisons, verification of large systems, training), so
they all follow the same rule: a tqdm bar on standard error when it is a terminal, or when asked
for with ``enabled=True``; nothing when output is piped or captured.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(total: int | None, desc: str, enabled: bool | None = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar over ``total`` units, or ``None`` when disabled.

    ``enabled=None`` shows it only when standard error is a terminal. Extra keyword arguments go
    to :class:`tqdm.tqdm` (``unit=``, ``leave=``, ...).
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    options = {"leave": False, "mininterval": 0.25, **kwargs}
    return tqdm(total=total, desc=desc, **options)
