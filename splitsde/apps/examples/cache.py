"""A user cache of trained weights, keyed by a hash of the training configuration.

Weights are written with ``torch.save(module.state_dict())`` (atomically: a temporary file
renamed into place) and read back with ``torch.load(path, weights_only=True)``, which unpickles
tensors only. Next to each ``<name>-<key>.pt`` a ``.json`` file records the configuration and
what the training reported, for people browsing the cache.

The directory is, in order of precedence: an explicit argument, ``$SPLITSDE_CACHE_DIR``,
``$XDG_CACHE_HOME/splitsde``, ``~/.cache/splitsde``; each example uses a sub-folder.

The ``.json`` file also records the SHA-256 digest of the weights. A cached file that does not
load, or whose digest differs (a truncated download, an interrupted copy, a flipped bit), is
reported with a warning and trained again, never used. The folder is checked for writing
*before* training, so a run never trains for minutes and then fails to save.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from splitsde.base.errors import SplitsdeError

__all__ = ["CacheError", "cache_dir", "check_writable", "config_key", "load_or_train"]


class CacheError(SplitsdeError, OSError):
    """The cache folder cannot be created or written."""


def cache_dir(override: str | os.PathLike[str] | None = None, *, sub: str = "") -> Path:
    """The cache folder (not created): ``override`` if given, else ``$SPLITSDE_CACHE_DIR``,
    ``$XDG_CACHE_HOME/splitsde`` or ``~/.cache/splitsde``, with ``sub`` appended."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("SPLITSDE_CACHE_DIR")
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "splitsde"
    return base / sub if sub else base


def config_key(config: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration (key order irrelevant)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_or_train(
    name: str,
    config: Mapping[str, Any],
    build: Callable[[], torch.nn.Module],
    train: Callable[[torch.nn.Module], Mapping[str, Any]],
    directory: Path,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The module of ``config``: loaded from ``directory`` if cached, else built, trained and
    saved.

    ``build()`` makes an untrained module; ``train(module)`` trains it in place and returns a
    JSON-serialisable report. The returned info has ``cached`` (whether the weights were
    loaded), ``path`` and, for a fresh training, the report.
    """
    key = config_key(config)
    path = directory / f"{name}-{key}.pt"
    module = build()
    if path.exists():
        loaded = _load(path)
        if loaded is not None:
            state, report = loaded
            try:
                module.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(
                    f"cached weights {path} do not fit the network of this configuration "
                    f"({err}); delete the file to retrain"
                ) from None
            return module, {"cached": True, "path": str(path), "key": key, **report}
    check_writable(directory)
    report = dict(train(module))
    _atomic_save(module.state_dict(), path)
    meta = {"name": name, "config": dict(config), "report": report, "sha256": _digest(path)}
    _atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True))
    return module, {"cached": False, "path": str(path), "key": key, **report}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The state dict and report of a cache entry, or ``None`` (with a warning) when the
    entry is damaged. Entries written before digests were recorded are checked by loading."""
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        want = meta.get("sha256")
        if want is not None and _digest(path) != want:
            raise ValueError("its SHA-256 digest differs from the one recorded when it was saved")
        state = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(state, dict):
            raise ValueError(f"it holds a {type(state).__name__}, not a state dict")
        return state, dict(meta.get("report", {}))
    except Exception as err:  # any unreadable file is a damaged entry: train again
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(
            f"cached weights {path} are damaged ({reason}); training again", stacklevel=3
        )
        return None


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and check that files can be written in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise CacheError(
            f"cannot write the weights cache in {directory}: {err.strerror or err}; choose "
            "another folder (--cache-dir or $SPLITSDE_CACHE_DIR)"
        ) from None


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_save(state: Mapping[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
