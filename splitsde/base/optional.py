"""Optional dependencies: import a heavy peer, or say which extra installs it.

splitsde's core (torch, sympy, numpy, scipy, matplotlib, tqdm, torchsde, torchdiffeq) is always
installed. Heavier peers are *extras*, imported only by the feature that needs them:

==============  ==========================================  ==========================
extra           packages                                     features
==============  ==========================================  ==========================
``md``          openmm, openmmtools, mdtraj                  the OpenMM backend,
                                                             molecular trajectory files
``diffusers``   diffusers                                    diffusers schedulers
``examples``    scikit-learn                                 the digits example
``all``         all of the above
==============  ==========================================  ==========================

Every import site of such a package goes through :func:`require`, so a missing package is one
clear error of the library's own type, :class:`MissingDependencyError` (also an
:class:`ImportError`), naming the feature and the install command::

    >>> require("a_package_that_is_not_there", extra="md", feature="the OpenMM backend")
    Traceback (most recent call last):
    ...
    splitsde.base.optional.MissingDependencyError: the OpenMM backend needs a_package_that_is_not_there: pip install 'splitsde[md]'
"""  # noqa: E501

from __future__ import annotations

import importlib
from types import ModuleType

from splitsde.base.errors import SplitsdeError

__all__ = ["EXTRAS", "MissingDependencyError", "require"]

#: The optional extras of ``pip install 'splitsde[...]'`` and the packages each brings.
EXTRAS: dict[str, tuple[str, ...]] = {
    "md": ("openmm", "openmmtools", "mdtraj"),
    "diffusers": ("diffusers",),
    "examples": ("scikit-learn",),
}


class MissingDependencyError(SplitsdeError, ImportError):
    """An optional package a feature needs is not installed; the message says which extra
    installs it."""


#: pip names of packages whose import name differs.
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import and return ``module`` (dotted names allowed), or raise
    :class:`MissingDependencyError`: ``"<feature> needs <package>: pip install
    'splitsde[<extra>]'"``.

    Only a missing package (or a missing sub-module of it) becomes that error; an installed
    package that fails while importing keeps its own error, which is the one worth reading.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; extras: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        missing = err.name or ""
        if missing != top and not missing.startswith(top + "."):
            raise  # the package is there; one of *its* own dependencies is not
        package = _DISTRIBUTIONS.get(top, top)
        raise MissingDependencyError(
            f"{feature} needs {package}: pip install 'splitsde[{extra}]'"
        ) from None
