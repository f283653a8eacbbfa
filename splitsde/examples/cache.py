"""A user cache of trained weights, keyed by a hash of the training configuration.

Weights are written with ``torch.save(module.state_dict())`` (atomically: a temporary file
renamed into place) and read back with ``torch.load(path, weights_only=True)``, which unpickles
tensors only. Next to each ``<name>-<key>.pt`` a ``.json`` file records the configuration and
what the training reported, for people browsing the cache.

The directory is, in order of precedence: an explicit argument, ``$SPLITSDE_CACHE_DIR``,
``$XDG_CACHE_HOME/splitsde``, ``~/.cache/splitsde``; each example uses a sub-folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["cache_dir", "config_key", "load_or_train"]


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
        state = torch.load(path, weights_only=True, map_location="cpu")
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"cached weights {path} do not fit the network of this configuration ({err}); "
                "delete the file to retrain"
            ) from None
        meta = path.with_suffix(".json")
        report = json.loads(meta.read_text())["report"] if meta.exists() else {}
        return module, {"cached": True, "path": str(path), "key": key, **report}
    report = dict(train(module))
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_save(module.state_dict(), path)
    meta = {"name": name, "config": dict(config), "report": report}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return module, {"cached": False, "path": str(path), "key": key, **report}


def _atomic_save(state: Mapping[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
