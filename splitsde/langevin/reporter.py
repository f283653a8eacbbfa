r"""A reporter for Langevin runs on the torch backend, in the manner of OpenMM's
``StateDataReporter``: one line every ``every`` steps, to a CSV or JSON-lines file, with the
unit of every column in its name.

Columns, in this order (each can be switched on or off like ``StateDataReporter``'s flags):

==================================  ==============================================================
column                              value at the reported step
==================================  ==============================================================
``Step``                            steps taken (``t0`` is step 0)
``Time (<time unit>)``              the time at the end of the step
``Potential Energy (<energy>)``     :math:`U(q)`, mean over walkers
``Kinetic Energy (<energy>)``       :math:`\tfrac12 p^\top M^{-1}p`, mean over walkers
``Total Energy (<energy>)``         the sum of the two
``Temperature (K)``                 kinetic temperature :math:`2K/(N_{dof}k_B)`, mean over walkers
``Configurational Temperature (K)`` :math:`\sum_w|\nabla U|^2 / (k_B\sum_w \Delta U)` over walkers
``Acceptance {<group>}``            accepted fraction of the Metropolis tests of that ``{ }``
                                    group since the previous line (all walkers)
``Speed (ns/day)``                  simulated time per wall-clock day since the previous line
                                    (``Speed (steps/s)`` when the time unit is not known)
``Elapsed Time (s)``                wall-clock time since the run started (across resumes)
==================================  ==============================================================

Units come from ``units=`` (a :class:`~splitsde.langevin.units.Units`), else from the system's
``units``, else reduced units: temperatures are then :math:`k_BT` in energy units, labelled
``(kT, reduced units)``. The quantities are the functions of
:mod:`splitsde.langevin.observables`.

The file is flushed after every line. With :func:`splitsde.integrate`'s ``checkpoint=`` the
reporter stores how many bytes it had written; a resumed run truncates the file there and
continues, so a crash between two checkpoints leaves neither duplicated nor missing lines. A
new run (no checkpoint to resume from) overwrites the file, as ``StateDataReporter`` does.
:func:`read_report` reads either format back and :func:`plot_report` plots it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time as _time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.langevin.observables import (
    configurational_temperature,
    kinetic_energy,
    kinetic_temperature,
    potential_energy,
)
from splitsde.langevin.units import REDUCED_UNITS, Units
from splitsde.runtime.observers import Observer

__all__ = ["Reporter", "ReporterError", "plot_report", "read_report"]

FORMATS = ("csv", "jsonl")


class ReporterError(SplitsdeError, ValueError):
    """A reporter that cannot write what it was asked to, or a report file that cannot be
    resumed or read."""


def _format_of(file: Any, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ReporterError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
        return format
    if isinstance(file, str | os.PathLike) and Path(file).suffix.lower() in (".jsonl", ".json"):
        return "jsonl"
    return "csv"


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Reporter(Observer):
    """Write a line of state data every ``every`` steps of :func:`splitsde.integrate`.

    Parameters
    ----------
    file:
        A path (created or overwritten; ``.jsonl``/``.json`` selects JSON lines) or an open
        text stream such as ``sys.stdout`` (not truncated on resume).
    system:
        The :class:`~splitsde.langevin.dynamics.LangevinSystem` being run (its energy, forces,
        Laplacian and masses).
    every:
        Steps between lines.
    format:
        ``"csv"`` (OpenMM's style: a header line ``#"Step","Time (ps)",...``) or ``"jsonl"``
        (one JSON object per line, keyed by the same column names).
    units:
        The :class:`~splitsde.langevin.units.Units` of the run (default: the system's, else
        reduced units).
    step, time, potential_energy, kinetic_energy, total_energy, temperature, \
configurational_temperature, acceptance, speed, elapsed_time:
        Which columns to write. ``None`` (the default of temperature, configurational
        temperature and acceptance) writes the column when the run has what it needs: momenta,
        a potential with a Laplacian, ``{ }`` groups in the word; ``True`` insists and raises
        :class:`ReporterError` when it cannot.
    removed_dof:
        Degrees of freedom per walker removed from the kinetic temperature's count.

    Examples
    --------
    >>> import splitsde as sd, io
    >>> system = sd.langevin.underdamped(sd.potentials.Harmonic(), kT=1.0)
    >>> out = io.StringIO()
    >>> res = sd.integrate(system.integrator("BAOAB"), system.initial_state(8), h=0.1,
    ...                    steps=20, seed=0, observers=[Reporter(out, system, every=10)])
    >>> out.getvalue().splitlines()[0]
    '#"Step","Time (reduced units)","Potential Energy (reduced units)","Temperature (kT, reduced units)","Configurational Temperature (kT, reduced units)","Speed (steps/s)"'
    """  # noqa: E501

    substeps = False

    def __init__(
        self,
        file: str | os.PathLike | IO[str],
        system: Any,
        every: int = 100,
        *,
        format: str | None = None,
        units: Units | None = None,
        step: bool = True,
        time: bool = True,
        potential_energy: bool = True,
        kinetic_energy: bool = False,
        total_energy: bool = False,
        temperature: bool | None = None,
        configurational_temperature: bool | None = None,
        acceptance: bool | None = None,
        speed: bool = True,
        elapsed_time: bool = False,
        removed_dof: int = 0,
        name: str = "reporter",
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ReporterError(f"every must be an integer >= 1, got {every!r}")
        self.format = _format_of(file, format)
        self.path = Path(file) if isinstance(file, str | os.PathLike) else None
        self._stream = None if self.path is not None else file
        if self._stream is not None and not hasattr(self._stream, "write"):
            raise ReporterError(f"file must be a path or a text stream, got {file!r}")
        self.system = system
        self.every = every
        self.units = units or getattr(system, "units", None) or REDUCED_UNITS
        self.name = name
        self.removed_dof = removed_dof
        self._want = {
            "step": step,
            "time": time,
            "potential_energy": potential_energy,
            "kinetic_energy": kinetic_energy,
            "total_energy": total_energy,
            "temperature": temperature,
            "configurational_temperature": configurational_temperature,
            "acceptance": acceptance,
            "speed": speed,
            "elapsed_time": elapsed_time,
        }
        self.columns: list[str] = []
        self._getters: list[Callable[[Mapping[str, torch.Tensor]], Any]] = []
        self._accepted: Sequence[torch.Tensor] = ()
        self._fh: IO[bytes] | None = None

    # -- the integrate protocol -----------------------------------------------------------------
    def watch_acceptance(self, accepted: Sequence[torch.Tensor]) -> None:
        self._accepted = accepted

    def start(self, t: float, state: Mapping[str, torch.Tensor], integrator: Any) -> None:
        self._build_columns(state, integrator)
        self._steps, self._t = 0, float(t)
        self._mark = (0, float(t), _time.perf_counter())  # steps, time, wall at the last line
        self._acc_mark = [0] * len(self._accepted)  # accepted sums at the last line
        self._line_steps = 0  # steps at the last line
        self._acc_now: list[int] = []
        self._elapsed_before = 0.0
        self._started = _time.perf_counter()
        self._resume_at: int | None = None
        self._close()

    def on_step(self, step: int, t: float, state: Mapping[str, torch.Tensor]) -> None:
        self._open()
        self._steps, self._t = step + 1, float(t)
        if self._steps % self.every == 0:
            self._write_line(state)
        return None

    def finish(self) -> None:
        self._open()
        self._close()
        return None

    def state_dict(self) -> dict[str, Any]:
        self._open()
        if self._fh is not None:
            self._fh.flush()
        return {
            "offset": self._fh.tell() if self._fh is not None else 0,
            "columns": list(self.columns),
            "format": self.format,
            "steps": self._steps,
            "t": self._t,
            "line_steps": self._line_steps,
            "accepted": list(self._acc_mark),
            "elapsed": self._elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["columns"]) != self.columns or state["format"] != self.format:
            raise ReporterError(
                f"reporter {self.name!r}: the checkpoint's reporter wrote {state['format']} "
                f"columns {list(state['columns'])}; this one writes {self.format} columns "
                f"{self.columns}"
            )
        self._steps, self._t = int(state["steps"]), float(state["t"])
        now = _time.perf_counter()
        # the speed restarts from the resumed step; acceptance continues from the last line
        self._mark = (self._steps, self._t, now)
        self._line_steps = int(state["line_steps"])
        self._acc_mark = [int(a) for a in state["accepted"]]
        self._elapsed_before = float(state["elapsed"])
        self._started = now
        self._resume_at = int(state["offset"])

    # -- columns ----------------------------------------------------------------------------------
    def _build_columns(self, state: Mapping[str, torch.Tensor], integrator: Any) -> None:
        u, want = self.units, self._want
        has_p = "p" in state
        groups = list(getattr(integrator.program, "groups", []))
        cols: list[tuple[str, Callable[[Mapping[str, torch.Tensor]], Any]]] = []

        def need(key: str, available: bool, why: str) -> bool:
            wanted = want[key]
            if wanted and not available:
                raise ReporterError(f"reporter {self.name!r}: cannot write {key}: {why}")
            return available if wanted is None else bool(wanted)

        mass = getattr(self.system, "mass", 1.0)
        if want["step"]:
            cols.append(("Step", lambda s: self._steps))
        if want["time"]:
            cols.append((f"Time ({u.time})", lambda s: self._t))
        if want["potential_energy"]:
            cols.append(
                (
                    f"Potential Energy ({u.energy})",
                    lambda s: float(potential_energy(s, self.system).mean()),
                )
            )
        no_p = "the state has no momenta p (overdamped dynamics)"
        if need("kinetic_energy", has_p, no_p):
            cols.append(
                (f"Kinetic Energy ({u.energy})", lambda s: float(kinetic_energy(s, mass).mean()))
            )
        if need("total_energy", has_p, no_p):
            cols.append(
                (
                    f"Total Energy ({u.energy})",
                    lambda s: float(
                        (potential_energy(s, self.system) + kinetic_energy(s, mass)).mean()
                    ),
                )
            )
        if need("temperature", has_p, no_p):
            removed = self.removed_dof
            cols.append(
                (
                    f"Temperature ({u.temperature})",
                    lambda s: float(kinetic_temperature(s, mass, removed, units=u).mean()),
                )
            )
        conf_ok, why = True, ""
        if want["configurational_temperature"] is not False:
            try:
                configurational_temperature(state, self.system)
            except Exception as err:  # a potential without a Laplacian (e.g. OpenMM forces)
                conf_ok, why = False, f"the potential has no Laplacian ({err})"
        if need("configurational_temperature", conf_ok, why):
            cols.append(
                (
                    f"Configurational Temperature ({u.temperature})",
                    lambda s: u.temperature_from_kT(
                        float(configurational_temperature(s, self.system))
                    ),
                )
            )
        if need("acceptance", bool(groups), "the word has no Metropolized { } group"):
            if len(self._accepted) != len(groups):
                raise ReporterError(
                    f"reporter {self.name!r}: acceptance needs integrate's Metropolis counters"
                )
            for i, g in enumerate(groups):
                cols.append((f"Acceptance {g.letter}", lambda s, i=i: self._acceptance(i)))
        if want["speed"]:
            ns = u.nanoseconds
            label = "Speed (ns/day)" if ns is not None else "Speed (steps/s)"
            cols.append((label, lambda s: self._speed(ns)))
        if want["elapsed_time"]:
            cols.append(("Elapsed Time (s)", lambda s: self._elapsed()))
        if not cols:
            raise ReporterError(f"reporter {self.name!r}: no columns to write")
        self.columns = [c for c, _ in cols]
        self._getters = [g for _, g in cols]

    def _acceptance(self, i: int) -> float:
        steps = self._steps - self._line_steps
        return (self._acc_now[i] - self._acc_mark[i]) / (self._accepted[i].numel() * steps)

    def _speed(self, ns_per_unit: float | None) -> float:
        steps0, t0, wall0 = self._mark
        wall = _time.perf_counter() - wall0
        if not wall > 0:  # a clock too coarse to see the interval
            return math.nan
        if ns_per_unit is None:
            return (self._steps - steps0) / wall
        return (self._t - t0) * ns_per_unit / wall * 86400.0

    def _elapsed(self) -> float:
        return self._elapsed_before + _time.perf_counter() - self._started

    # -- the file ---------------------------------------------------------------------------------
    def _header(self) -> str:
        if self.format == "jsonl":
            return ""
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(self.columns)
        return "#" + buf.getvalue()

    def _open(self) -> None:
        if self._fh is not None or (self.path is None and self._stream is None):
            return
        header = self._header()
        if self.path is None:  # a stream: append only
            self._fh = _TextSink(self._stream)
            if self._resume_at is None:
                self._fh.write(header.encode())
            self._resume_at = None
            return
        if self._resume_at is not None:
            size = self.path.stat().st_size if self.path.exists() else -1
            if size < self._resume_at:
                raise ReporterError(
                    f"report file {self.path} has {max(size, 0)} bytes but the checkpoint was "
                    f"taken after {self._resume_at}: it was changed or replaced since"
                )
            with open(self.path, "rb") as fh:
                if not fh.read(len(header)).decode(errors="replace") == header:
                    raise ReporterError(
                        f"report file {self.path} does not start with this reporter's header"
                    )
            os.truncate(self.path, self._resume_at)
            self._fh = open(self.path, "ab")  # closed in finish()
            self._resume_at = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "wb")  # closed in finish()
        self._fh.write(header.encode())
        self._fh.flush()

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self.path is not None:
                self._fh.close()
            self._fh = None

    def _write_line(self, state: Mapping[str, torch.Tensor]) -> None:
        self._acc_now = [int(a.sum()) for a in self._accepted]
        values = [g(state) for g in self._getters]
        if self.format == "csv":
            line = ",".join(str(v) if isinstance(v, int) else repr(float(v)) for v in values)
        else:
            record = {
                c: v if isinstance(v, int) else _number(float(v))
                for c, v in zip(self.columns, values)
            }
            line = json.dumps(record, allow_nan=False)
        self._fh.write((line + "\n").encode())
        self._fh.flush()
        self._mark = (self._steps, self._t, _time.perf_counter())
        self._acc_mark = self._acc_now
        self._line_steps = self._steps


class _TextSink:
    """Bytes written to a text stream (``sys.stdout``), with the file interface used above."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.written = 0

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode())
        self.written += len(data)

    def flush(self) -> None:
        self.stream.flush()

    def tell(self) -> int:
        return self.written


# -- reading and plotting -------------------------------------------------------------------------
def read_report(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A report file (CSV or JSON lines) as column name -> float64 array (``NaN`` where a JSON
    value is ``null``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ReporterError(f"cannot read report {path}: {err}") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ReporterError(f"report {path} is empty")
    if lines[0].startswith("#"):
        rows = list(csv.reader([lines[0][1:], *lines[1:]]))
        columns, data = rows[0], rows[1:]
        if any(len(r) != len(columns) for r in data):
            raise ReporterError(f"report {path}: a line has the wrong number of columns")
        table = np.array(data, dtype=np.float64).reshape(len(data), len(columns))
        return {c: table[:, j] for j, c in enumerate(columns)}
    try:
        records = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as err:
        raise ReporterError(
            f"report {path} is neither CSV with a header nor JSON lines: {err}"
        ) from None
    columns = list(records[0])
    return {
        c: np.array([np.nan if r.get(c) is None else r[c] for r in records], dtype=np.float64)
        for c in columns
    }


def plot_report(
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    *,
    out: str | os.PathLike | None = None,
    reference: Mapping[str, float] | None = None,
) -> Any:
    """Plot the columns of a report file against time (or step), one panel per column.

    ``columns`` are column names or unambiguous prefixes (``"Temperature"``); by default every
    column but step, time and elapsed time. ``reference`` draws dashed horizontal lines
    (prefix -> value, e.g. ``{"Temperature": 300.0}``). Returns the
    :class:`matplotlib.figure.Figure`; ``out`` also saves it (PNG, PDF, ... by suffix).
    """
    from matplotlib.figure import Figure

    data = read_report(path)
    xname = next((c for c in data if c.startswith("Time")), None) or next(
        (c for c in data if c == "Step"), None
    )
    if xname is None:
        raise ReporterError(f"report {path} has neither a time nor a step column")
    skip = {"Step", xname, "Elapsed Time (s)"}
    if columns is None:
        chosen = [c for c in data if c not in skip]
    else:
        chosen = [_column(data, c, path) for c in columns]
    if not chosen:
        raise ReporterError(f"report {path} has no column to plot")
    fig = Figure(figsize=(7.0, 1.9 * len(chosen) + 0.6), layout="constrained")
    axes = fig.subplots(len(chosen), 1, sharex=True, squeeze=False)[:, 0]
    x = data[xname]
    for ax, c in zip(axes, chosen):
        ax.plot(x, data[c], lw=1.2)
        ax.set_ylabel(c.replace(" (", "\n("), fontsize=8)
        for prefix, value in (reference or {}).items():
            if c.startswith(prefix):
                ax.axhline(value, color="k", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xname)
    if out is not None:
        fig.savefig(out, dpi=120)
    return fig


def _column(data: Mapping[str, np.ndarray], name: str, path: Any) -> str:
    if name in data:
        return name
    hits = [c for c in data if c.startswith(name)]
    if len(hits) != 1:
        what = "matches several columns" if hits else "is not a column"
        raise ReporterError(f"{name!r} {what} of report {path}; columns: {', '.join(data)}")
    return hits[0]
