"""Progress bars for long work: shown on a terminal, silent otherwise.

One helper for every long-running loop of the library and the command line (the time loop of
:func:`splitsde.integrate`, sampler comparisons, verification of large systems, training), so
they all follow the same rule: a tqdm bar on standard error when it is a terminal, or when asked
for with ``enabled=True``; nothing when output is piped or captured.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "progress_bar"]


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


class Progress:
    """The progress bar of a loop over ``total`` steps, updated about 200 times in all.

    :meth:`next_update` tells the loop the next step after which the bar wants an update, so
    a loop without a bar (or between updates) runs its steps without looking at it.
    """

    def __init__(self, total: int, desc: str, enabled: bool | None = None, done: int = 0) -> None:
        self.total = total
        self.stride = max(1, total // 200)
        self.bar = progress_bar(total, desc, enabled)
        if self.bar is not None and done:
            self.bar.update(done)

    def next_update(self, k: int) -> int | None:
        """The step index at which the bar next wants an update (``None``: never)."""
        return None if self.bar is None else (k // self.stride + 1) * self.stride

    def update(self, k: int) -> None:
        """``k`` steps are done."""
        if self.bar is not None and (k % self.stride == 0 or k == self.total):
            self.bar.update(k - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
