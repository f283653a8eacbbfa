"""Checkpoint files: atomic, checksummed, and tied to the run that wrote them.

A checkpoint holds everything :func:`splitsde.integrate` needs to continue a run bit for bit:
the state, the carried field values, the noise source's generator state, the step index,
field-evaluation counts, Metropolis acceptance counts, observer accumulators and the states and
records saved so far. It is written to a temporary file in the same directory, flushed to disk
and renamed over the previous checkpoint (a rename is atomic on POSIX file systems), so a crash
leaves either the old or the new checkpoint, never a torn one.

The file starts with a magic line and the SHA-256 of its payload; a file that fails the check
is refused. The payload carries a *fingerprint* of the run (word, reduction, step program,
parameters, grid, dtype, initial state, ...); resuming a different run is refused with an error
naming what differs. The payload is read with ``torch.load(weights_only=True)``: tensors,
numbers, strings and containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitsde.errors import SplitsdeError

__all__ = ["CheckpointError", "read_checkpoint", "run_fingerprint", "write_checkpoint"]

MAGIC = b"SPLITSDE-CHECKPOINT 1\n"
FORMAT_VERSION = 1


class CheckpointError(SplitsdeError, ValueError):
    """A checkpoint that is corrupted, from another run, or otherwise unusable."""


# -- encoding: keep the payload loadable with weights_only=True -------------------------------
def _encode(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").clone()
    if isinstance(x, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(x).copy())}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v) for v in x]}
    if isinstance(x, list):
        return [_encode(v) for v in x]
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise CheckpointError(
        f"cannot store a {type(x).__name__} in a checkpoint; observers' state_dict() and "
        "recorded values must be tensors, arrays, numbers, strings or containers of them"
    )


def _decode(x: Any, device: torch.device | None = None) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device) if device is not None else x
    if isinstance(x, dict):
        if set(x) == {"__ndarray__"}:
            return x["__ndarray__"].numpy()
        if set(x) == {"__tuple__"}:
            return tuple(_decode(v, device) for v in x["__tuple__"])
        return {k: _decode(v, device) for k, v in x.items()}
    if isinstance(x, list):
        return [_decode(v, device) for v in x]
    return x


def write_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` atomically: temporary file, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(_encode({"format_version": FORMAT_VERSION, **payload}), buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + digest + b"\n" + body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def read_checkpoint(path: str | os.PathLike, device: torch.device | None = None) -> dict[str, Any]:
    """Read and verify a checkpoint; raise :class:`CheckpointError` if it is damaged."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a splitsde checkpoint (bad header)")
    rest = raw[len(MAGIC) :]
    digest, sep, body = rest[:64], rest[64:65], rest[65:]
    if sep != b"\n" or hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupted (checksum mismatch: truncated or modified file); "
            "refusing to resume from it"
        )
    try:
        payload = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as exc:  # a valid checksum over an unreadable payload
        raise CheckpointError(f"checkpoint {path} cannot be decoded: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has an unsupported format version")
    return _decode(payload, device)


# -- fingerprint ----------------------------------------------------------------------------
def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().to("cpu").contiguous()
            h.update(str((tuple(a.shape), a.dtype)).encode())
            h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
        elif isinstance(a, np.ndarray):
            h.update(str((a.shape, a.dtype)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.hexdigest()[:16]


def run_fingerprint(
    integrator: Any,
    y0: Sequence[torch.Tensor],
    times: np.ndarray,
    *,
    noise: Any,
    observers: Sequence[Any],
    save_every: int | None,
    save: Sequence[str],
    chunk: int | None,
) -> dict[str, str]:
    """What must agree between the run that wrote a checkpoint and the run resuming it."""
    params = {
        p.name: (_digest(v) if isinstance(v, torch.Tensor) else repr(float(v)))
        for p, v in sorted(integrator.params.items(), key=lambda kv: kv[0].name)
    }
    return {
        "word": str(integrator.word),
        "reduction": str(integrator.reduction),
        "step program": _digest(integrator.program.listing()),
        "parameters": repr(params),
        "fields": ", ".join(bf.field.name for bf in integrator.fields),
        "blocks": repr([(n, tuple(x.shape)) for n, x in zip(integrator.blocks, y0)]),
        "dtype": str(y0[0].dtype),
        "device": y0[0].device.type,
        "initial state": _digest(*y0),
        "grid": f"{len(times) - 1} steps, t0={times[0]!r}, t1={times[-1]!r}, {_digest(times)}",
        "noise source": type(noise).__name__,
        "observers": repr([(o.name, type(o).__name__) for o in observers]),
        "saving": repr((save_every, tuple(save), chunk)),
    }


def check_fingerprint(
    path: str | os.PathLike, stored: Mapping[str, str], current: Mapping[str, str]
) -> None:
    """Refuse a checkpoint whose fingerprint differs, naming every differing component."""
    diffs = [
        f"{key}: checkpoint has {stored.get(key, '(missing)')}, this run has {value}"
        for key, value in current.items()
        if stored.get(key) != value
    ]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was written by a different run; refusing to resume:\n  "
            + "\n  ".join(diffs)
        )
