"""Checkpoint files: atomic, checksummed, rotated, and tied to the run that wrote them.

A checkpoint holds everything :func:`splitsde.integrate` needs to continue a run bit for bit:
the state, the carried field values, the noise source's generator state, the step index,
field-evaluation counts, Metropolis acceptance counts, observer accumulators and the states and
records saved so far.

Writing. The payload goes to a temporary file ``.<name>.tmp-<host>-<pid>`` in the same
directory, is flushed to disk, the current checkpoint is renamed to ``<name>.prev`` and the
temporary file renamed to ``<name>`` (renames are atomic on POSIX file systems). A crash
therefore leaves the newest checkpoint, the previous one, or both, never a torn file; and since
:func:`splitsde.integrate` checks the state for non-finite values before every write, a bad
state never replaces a good checkpoint. Temporary files left by writers that were killed (their
process no longer exists on this host) are removed when a run opens the checkpoint.

Reading. The file starts with a magic line and the SHA-256 of its payload; a file that fails
the check, or whose state is not finite, is not used. Resuming takes the newest usable file of
the two and warns (:class:`CheckpointWarning`) when it had to fall back to the previous one.
The payload carries a *fingerprint* of the run (see :mod:`splitsde.runtime.fingerprint`); resuming a
different run is refused with an error naming what differs. The payload is read with
``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, never
arbitrary pickled objects.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import socket
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitsde.base.errors import SplitsdeError
from splitsde.runtime.fingerprint import UNIDENTIFIED, run_fingerprint

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "Checkpointer",
    "check_fingerprint",
    "discard_checkpoint",
    "load_latest",
    "open_checkpoint",
    "previous_path",
    "read_checkpoint",
    "remove_stale_temporaries",
    "run_fingerprint",
    "tmp_path",
    "write_checkpoint",
]

MAGIC = b"SPLITSDE-CHECKPOINT 1\n"
FORMAT_VERSION = 2


class CheckpointError(SplitsdeError, ValueError):
    """A checkpoint that is corrupted, from another run, or cannot be written.

    When writing fails during a run, the run stops and :attr:`result` holds the
    :class:`~splitsde.runtime.integrate.Result` computed so far (``None`` otherwise).
    """

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class CheckpointWarning(UserWarning):
    """Resuming fell back to the previous checkpoint (the newest is damaged or missing)."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where the previous checkpoint is kept: ``<name>.prev`` next to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


_HOST = socket.gethostname().replace("/", "_")


def tmp_path(path: Path) -> Path:
    """The temporary file a writer on this host and process uses for ``path``."""
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike, pattern: str | None = None) -> list[Path]:
    """Remove temporary files ``.<name>.tmp-<host>-<pid>`` left by writers that died.

    ``path`` is a file whose temporaries are looked for next to it; with ``pattern`` (a glob
    such as ``"chunk_*.pt"``) it is a directory and the temporaries of every file name matching
    the pattern are. Only temporaries written on this host (or in the older ``.tmp-<pid>``
    form) are touched, and only when process ``pid`` no longer exists. Returns the removed
    paths.
    """
    path = Path(path)
    directory, pattern = (path, pattern) if pattern is not None else (path.parent, path.name)
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for p in entries:
        name, sep, owner = p.name.rpartition(".tmp-")
        if not (sep and name.startswith(".") and fnmatch.fnmatchcase(name[1:], pattern)):
            continue
        host, _, pid = owner.rpartition("-")
        if not pid.isdigit() or (host and host != _HOST) or int(pid) == os.getpid():
            continue
        if not _alive(int(pid)):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def open_checkpoint(
    path: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    device: torch.device | None = None,
) -> dict[str, Any] | None:
    """Everything :func:`splitsde.integrate` checks before step 1; returns the payload to
    resume from (``None`` for a new run).

    * the directory is created if missing, and a probe file is written and removed, so an
      unwritable location fails now with :class:`CheckpointError`, not after the run;
    * temporaries of dead writers are removed (:func:`remove_stale_temporaries`);
    * ``resume``: the newest usable checkpoint is loaded (:func:`load_latest`);
    * otherwise an existing checkpoint is refused unless ``overwrite`` (then
      :func:`discard_checkpoint` deletes it once the run is ready to start).
    """
    path = Path(path)
    prev = previous_path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"cannot create the checkpoint directory {path.parent}: {exc.strerror or exc}"
        ) from None
    remove_stale_temporaries(path)
    probe = tmp_path(path)
    try:
        with open(probe, "wb") as fh:
            fh.write(b"")
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be written ({exc.strerror or exc}); choose a writable "
            "location"
        ) from None
    if resume:
        return load_latest(path, device)
    existing = [p for p in (path, prev) if p.exists()]
    if existing and not overwrite:
        raise CheckpointError(
            f"checkpoint {existing[0]} already exists; pass resume=True to continue the run "
            "that wrote it, or overwrite=True to start a new run over it"
        )
    return None


def discard_checkpoint(path: str | os.PathLike) -> None:
    """Delete a checkpoint and its previous version (a new run starts over them)."""
    for p in (Path(path), previous_path(path)):
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot remove the old checkpoint {p}: {exc}") from None


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
    """Write ``payload`` atomically and keep the previous checkpoint as ``<name>.prev``:
    temporary file, fsync, rename the current file to ``.prev``, rename the temporary file.

    Raises :class:`OSError` when the file system refuses (the temporary file is removed and
    the existing checkpoints are left as they were).
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(_encode({"format_version": FORMAT_VERSION, **payload}), buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + digest + b"\n" + body)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    try:  # make the renames themselves durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def read_checkpoint(path: str | os.PathLike, device: torch.device | None = None) -> dict[str, Any]:
    """Read and verify one checkpoint file; raise :class:`CheckpointError` if it is damaged."""
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
            f"checkpoint {path} is corrupted (checksum mismatch: truncated or modified file)"
        )
    try:
        payload = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as exc:  # a valid checksum over an unreadable payload
        raise CheckpointError(f"checkpoint {path} cannot be decoded: {exc}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} has an unsupported format")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this version of splitsde reads "
            f"version {FORMAT_VERSION} only (rerun the job from its start)"
        )
    return _decode(payload, device)


def _finite(payload: Mapping[str, Any]) -> bool:
    def tensors(x: Any):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, list | tuple):
            for v in x:
                yield from tensors(v)

    return all(
        bool(torch.isfinite(x).all())
        for x in tensors([payload.get("state"), payload.get("carry")])
        if x.is_floating_point()
    )


def load_latest(
    path: str | os.PathLike, device: torch.device | None = None
) -> dict[str, Any] | None:
    """The newest usable checkpoint among ``path`` and its previous version, or ``None`` if
    neither exists.

    A file is usable when it passes the checksum and its state is finite. Falling back to the
    previous version emits a :class:`CheckpointWarning` saying why; no usable file raises
    :class:`CheckpointError` with the reason for each.
    """
    path = Path(path)
    found: list[tuple[Path, dict[str, Any]]] = []
    problems: list[str] = []
    for p in (path, previous_path(path)):
        if not p.exists():
            if p == path:
                problems.append(f"checkpoint {p} is missing")
            continue
        try:
            payload = read_checkpoint(p, device)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if not _finite(payload):
            problems.append(f"checkpoint {p} holds non-finite values")
            continue
        found.append((p, payload))
    if not found:
        if not path.exists() and not previous_path(path).exists():
            return None
        raise CheckpointError("no usable checkpoint, refusing to resume: " + "; ".join(problems))
    best, payload = max(found, key=lambda f: int(f[1]["step"]))
    if best != path:
        warnings.warn(
            f"{problems[0]}; resuming from the previous checkpoint {best} "
            f"(step {int(payload['step'])})",
            CheckpointWarning,
            stacklevel=4,
        )
    return payload


def check_fingerprint(
    path: str | os.PathLike,
    stored: Mapping[str, str],
    current: Mapping[str, str],
    *,
    trust: bool = False,
) -> list[str]:
    """Refuse a checkpoint whose fingerprint differs, naming every differing component.

    Components that cannot be identified are refused too (they might differ) unless ``trust``;
    the list of components accepted on trust is returned.
    """
    diffs = [
        f"{key}: checkpoint has {stored.get(key, '(missing)')}, this run has {value}"
        for key, value in current.items()
        if stored.get(key) != value
    ]
    diffs += [f"{key}: in the checkpoint, not in this run" for key in stored if key not in current]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was written by a different run; refusing to resume:\n  "
            + "\n  ".join(diffs)
        )
    unknown = [v[len(UNIDENTIFIED) :] for v in current.values() if v.startswith(UNIDENTIFIED)]
    if unknown and not trust:
        raise CheckpointError(
            f"cannot check that checkpoint {path} was written by this run: "
            + "; ".join(unknown)
            + '. Pass resume="trust" to resume anyway if you are sure it computes the same '
            "thing as when the checkpoint was written"
        )
    return unknown


class Checkpointer:
    """The checkpoints of one run: opens the file before step 1 (:func:`open_checkpoint`),
    ties it to the run by its fingerprint, and writes one every ``every`` steps and at the end.

    :attr:`stored` is the payload to resume from (``None`` for a new run).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        every: int | None,
        *,
        resume: bool | str,
        overwrite: bool,
        device: torch.device | None = None,
    ) -> None:
        self.path = Path(path)
        self.every = every or 0
        self.trust = resume == "trust"
        self.overwrite = overwrite
        self.stored = open_checkpoint(
            self.path, resume=bool(resume), overwrite=overwrite, device=device
        )
        self.fingerprint: dict[str, str] | None = None

    def stored_seed(self, seed: int | None) -> int | None:
        """The seed of the run being resumed (``None`` for a new run or a run without one);
        refuses a different ``seed``."""
        if self.stored is None:
            return None
        if seed is not None and self.stored["seed"] != seed:
            raise CheckpointError(
                f"checkpoint {self.path} was written with seed {self.stored['seed']}, "
                f"this run has seed {seed}"
            )
        return self.stored["seed"]

    def identify(self, fingerprint: dict[str, str]) -> None:
        """Tie the checkpoint to the run: a resumed checkpoint must match ``fingerprint``
        (:func:`check_fingerprint`); a new run warns when it could only be resumed on trust."""
        self.fingerprint = fingerprint
        if self.stored is not None:
            check_fingerprint(self.path, self.stored["fingerprint"], fingerprint, trust=self.trust)
            return
        unknown = [
            v[len(UNIDENTIFIED) :] for v in fingerprint.values() if v.startswith(UNIDENTIFIED)
        ]
        if unknown:
            warnings.warn(
                "; ".join(unknown)
                + ': resuming this run from its checkpoint will need resume="trust"',
                CheckpointWarning,
                stacklevel=3,
            )

    def begin(self) -> None:
        """The run is ready to start: a new run over an existing checkpoint deletes it now."""
        if self.stored is None and self.overwrite:
            discard_checkpoint(self.path)

    def next_write(self, k: int) -> int | None:
        """The step index of the next periodic write after ``k`` (``None``: only at the end)."""
        return (k // self.every + 1) * self.every if self.every else None

    def due(self, k: int) -> bool:
        """Whether a periodic write falls after step ``k``."""
        return bool(self.every) and k % self.every == 0

    def write(self, k: int, payload: Mapping[str, Any], partial: Callable[[], Any]) -> None:
        """Write the checkpoint after ``k`` steps; if that fails, the run stops with
        :class:`CheckpointError` carrying ``partial()``, the result so far."""
        try:
            write_checkpoint(self.path, {"fingerprint": self.fingerprint, "step": k, **payload})
        except (OSError, CheckpointError) as exc:
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CheckpointError(
                f"writing checkpoint {self.path} after step {k} failed ({what}); the run "
                f"stopped there: the result of its {k} steps is attached as err.result, and "
                "the checkpoints already on disk are unchanged",
                result=partial(),
            ) from exc
