"""Shared command-line options and helpers.

Arguments are validated when they are parsed, before any computation: every type below says
the valid range in its message, and output paths are probed for writability (a figure that
cannot be written is reported at once, not after a run of several minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitsde.apps.cli import CLIError

DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Largest accepted seed: a signed 64-bit integer fits every generator we seed
#: (``torch.Generator.manual_seed`` takes -2**63 .. 2**64 - 1 and wraps negative values onto
#: large ones, so a negative seed would silently alias another; numpy takes any non-negative).
SEED_MAX = 2**63 - 1

#: Range of the physical parameters of the built-in systems (reduced units). Within it every
#: derived quantity (variances kT/(m omega^2) and kT m, forces, stability bounds) stays far from
#: the float32 and float64 limits.
PHYSICAL_RANGE = (1e-6, 1e6)

#: Tensors of the size of the state a run keeps alive at once (state blocks, forces, observer
#: accumulators, temporaries of a step): used to estimate the memory of a walker count.
STATE_COPIES = 16


def _ascii(text: str, kind: str) -> None:
    if not text.isascii():
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind} (ASCII digits only)")


def _number(text: str) -> float:
    _ascii(text, "a number")
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return v


def _integer(text: str) -> int:
    _ascii(text, "an integer")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_float(text: str) -> float:
    v = _number(text)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{text} must be positive and finite")
    return v


def nonnegative_float(text: str) -> float:
    v = _number(text)
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{text} must be non-negative and finite")
    return v


def bounded_float(lo: float, hi: float, *, zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a number in ``[lo, hi]`` (or exactly zero when ``zero``)."""

    def parse(text: str) -> float:
        v = _number(text)
        if zero and v == 0:
            return 0.0
        if not (lo <= v <= hi):
            also = " or 0" if zero else ""
            raise argparse.ArgumentTypeError(f"{text} is outside the range [{lo:g}, {hi:g}]{also}")
        return v

    parse.__name__ = "number"
    return parse


#: ``--mass``, ``--omega``, ``--kT`` of the built-in systems.
physical = bounded_float(*PHYSICAL_RANGE)
#: ``--gamma``: zero (no friction) or in the physical range.
friction = bounded_float(*PHYSICAL_RANGE, zero=True)


def positive_int(text: str) -> int:
    v = _integer(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return v


def nonnegative_int(text: str) -> int:
    v = _integer(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text} must be non-negative")
    return v


def seed(text: str) -> int:
    """A seed: an integer from 0 to :data:`SEED_MAX`."""
    v = _integer(text)
    if not 0 <= v <= SEED_MAX:
        shown = text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"
        raise argparse.ArgumentTypeError(
            f"{shown} is out of range: a seed is an integer from 0 to {SEED_MAX} (2**63 - 1)"
        )
    return v


def threads(text: str) -> int:
    """A number of threads: at least 1 (torch refuses 0)."""
    v = _integer(text)
    if not 1 <= v <= 4096:
        raise argparse.ArgumentTypeError(f"{text} is outside the range [1, 4096]")
    return v


def positive_int_list(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers (``"10,20,50"``)."""
    _ascii(text, "a comma-separated list of integers")
    try:
        out = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 10,20,50")
    return out


# -- output paths -----------------------------------------------------------------------------
def writable_file(text: str) -> str:
    """A file path that can be written now: its folder exists and accepts a new file (probed by
    creating and removing it), or the file exists and opens for writing. Nothing is changed."""
    path = Path(text).expanduser()
    if not text.strip():
        raise argparse.ArgumentTypeError("empty file name")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    parent = path.parent
    if not parent.exists():
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} does not exist")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is not a folder")
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            with open(path, "xb"):
                pass
            path.unlink()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {exc.strerror}") from None
    return text


def plot_file(text: str) -> str:
    """A writable figure path whose extension matplotlib can write (PNG if none)."""
    suffix = Path(text).suffix.lower().lstrip(".")
    if suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix not in formats:
            raise argparse.ArgumentTypeError(
                f"cannot write a figure as .{suffix}; formats: {', '.join(sorted(formats))}"
            )
    return writable_file(text)


def writable_dir(text: str) -> str:
    """A folder that exists and accepts files, or that can be created: its nearest existing
    ancestor is a folder that accepts files (probed with a temporary file). Nothing is left
    behind."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty folder name")
    path = Path(text).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"cannot use folder {text}: {probe} is not a folder")
    try:
        fd = os.open(probe / f".splitsde-probe-{os.getpid()}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        os.unlink(probe / f".splitsde-probe-{os.getpid()}")
    except OSError as exc:
        where = "" if probe == path else f" (in {probe})"
        raise argparse.ArgumentTypeError(
            f"cannot write into folder {text}{where}: {exc.strerror}"
        ) from None
    return text


# -- memory -----------------------------------------------------------------------------------
def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux), or
    ``None`` when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(need: float, what: str, remedy: str) -> None:
    """Refuse a run whose estimated memory ``need`` (bytes) exceeds what is available."""
    avail = available_memory()
    if avail is not None and need > avail:
        raise CLIError(
            f"{what} needs about {_gib(need)} of memory, more than the {_gib(avail)} available; "
            f"{remedy}"
        )


# -- output -----------------------------------------------------------------------------------
def to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return to_jsonable(x.detach().cpu().numpy())
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def print_json(obj: Any) -> None:
    print(json.dumps(to_jsonable(obj), indent=2))


__all__ = [
    "DTYPES",
    "PHYSICAL_RANGE",
    "SEED_MAX",
    "CLIError",
    "available_memory",
    "bounded_float",
    "check_memory",
    "friction",
    "nonnegative_float",
    "nonnegative_int",
    "physical",
    "plot_file",
    "positive_float",
    "positive_int",
    "positive_int_list",
    "print_json",
    "seed",
    "threads",
    "to_jsonable",
    "writable_dir",
    "writable_file",
]
