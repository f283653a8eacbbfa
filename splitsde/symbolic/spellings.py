r"""How each elementary function of a symbolic expression is spelled by each backend.

One table, :data:`FUNCTIONS`, maps a sympy function (by its class name, the name sympy's own
printers use) to its spelling in every backend:

``torch``
    a torch callable (the generated step source and ``lambdify`` over tensors);
``numpy``
    a callable on float64 arrays (coefficients evaluated on a time grid);
``math``
    a callable on Python floats (scalar field definitions, probability-flow right-hand sides);
``lepton``
    a template of OpenMM's Lepton expression language (``{0}`` is the argument).

``None`` marks a function a backend cannot express (torch and Lepton have no imaginary error
function :math:`\operatorname{erfi}(x) = -i\,\operatorname{erf}(ix)`); asking for it, or for a
function the table does not know, raises :class:`UnsupportedFunctionError` naming the backend
and the function -- before any code runs, instead of a ``NameError`` in generated code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import sympy

from splitsde.base.errors import SplitsdeError

__all__ = [
    "BACKENDS",
    "FUNCTIONS",
    "UnsupportedFunctionError",
    "check_functions",
    "lambdify",
    "lambdify_modules",
    "lepton_call",
    "namespace",
    "spelling",
]

BACKENDS = ("torch", "numpy", "math", "lepton")

_PHI1 = "splitsde.symbolic.numeric.phi1_numpy"

#: sympy function name -> backend -> spelling (``None``: not expressible there).
FUNCTIONS: dict[str, dict[str, str | None]] = {
    "exp": {"torch": "torch.exp", "numpy": "numpy.exp", "math": "math.exp", "lepton": "exp({0})"},
    "log": {"torch": "torch.log", "numpy": "numpy.log", "math": "math.log", "lepton": "log({0})"},
    "sqrt": {
        "torch": "torch.sqrt",
        "numpy": "numpy.sqrt",
        "math": "math.sqrt",
        "lepton": "sqrt({0})",
    },
    "sin": {"torch": "torch.sin", "numpy": "numpy.sin", "math": "math.sin", "lepton": "sin({0})"},
    "cos": {"torch": "torch.cos", "numpy": "numpy.cos", "math": "math.cos", "lepton": "cos({0})"},
    "tan": {"torch": "torch.tan", "numpy": "numpy.tan", "math": "math.tan", "lepton": "tan({0})"},
    "asin": {
        "torch": "torch.asin",
        "numpy": "numpy.arcsin",
        "math": "math.asin",
        "lepton": "asin({0})",
    },
    "acos": {
        "torch": "torch.acos",
        "numpy": "numpy.arccos",
        "math": "math.acos",
        "lepton": "acos({0})",
    },
    "atan": {
        "torch": "torch.atan",
        "numpy": "numpy.arctan",
        "math": "math.atan",
        "lepton": "atan({0})",
    },
    "sinh": {
        "torch": "torch.sinh",
        "numpy": "numpy.sinh",
        "math": "math.sinh",
        "lepton": "sinh({0})",
    },
    "cosh": {
        "torch": "torch.cosh",
        "numpy": "numpy.cosh",
        "math": "math.cosh",
        "lepton": "cosh({0})",
    },
    "tanh": {
        "torch": "torch.tanh",
        "numpy": "numpy.tanh",
        "math": "math.tanh",
        "lepton": "tanh({0})",
    },
    "Abs": {"torch": "torch.abs", "numpy": "numpy.abs", "math": "math.fabs", "lepton": "abs({0})"},
    # Lepton's step(x) is 1 for x >= 0, so step(x) - step(-x) is 0 at 0 like sign
    "sign": {
        "torch": "torch.sign",
        "numpy": "numpy.sign",
        "math": "numpy.sign",
        "lepton": "(step({0}) - step(-({0})))",
    },
    "erf": {
        "torch": "torch.special.erf",
        "numpy": "scipy.special.erf",
        "math": "math.erf",
        "lepton": "erf({0})",
    },
    "erfc": {
        "torch": "torch.special.erfc",
        "numpy": "scipy.special.erfc",
        "math": "math.erfc",
        "lepton": "erfc({0})",
    },
    "erfi": {
        "torch": None,
        "numpy": "scipy.special.erfi",
        "math": "scipy.special.erfi",
        "lepton": None,
    },
    # phi1(a) = (e^a - 1)/a with its limit 1 at a = 0; in torch only as a hoisted coefficient
    "phi1": {
        "torch": None,
        "numpy": _PHI1,
        "math": _PHI1,
        "lepton": "select({0}, (exp({0}) - 1)/({0}), 1)",
    },
}

#: Constructs sympy's own printers spell in every Python backend (not elementary functions).
_STRUCTURAL = frozenset({"Piecewise", "Max", "Min", "Heaviside"})


class UnsupportedFunctionError(SplitsdeError, NotImplementedError):
    """A backend has no spelling of a function that appears in an expression."""


def spelling(backend: str, name: str) -> str:
    """The spelling of sympy function ``name`` in ``backend`` (a dotted callable, or a Lepton
    template); raises :class:`UnsupportedFunctionError` when there is none."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; the backends are {', '.join(BACKENDS)}")
    row = FUNCTIONS.get(name)
    if row is None:
        raise UnsupportedFunctionError(
            f"the {backend} backend has no spelling of function {name}: splitsde knows "
            f"{', '.join(sorted(FUNCTIONS))}"
        )
    out = row[backend]
    if out is None:
        supported = [b for b in BACKENDS if row[b] is not None]
        raise UnsupportedFunctionError(
            f"function {name} cannot be expressed in the {backend} backend (it can in "
            f"{', '.join(supported) or 'none'})"
        )
    return out


def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, attr = dotted.rpartition(".")
    obj: Any = importlib.import_module(module)
    return getattr(obj, attr)


@cache
def namespace(backend: str) -> dict[str, Callable[..., Any]]:
    """Name -> callable of every function ``backend`` (torch, numpy or math) spells, for
    ``sympy.lambdify``."""
    if backend == "lepton":
        raise ValueError("Lepton is an expression language, not a Python namespace")
    out = {}
    for name, row in FUNCTIONS.items():
        if row[backend] is not None:
            out[name] = _resolve(spelling(backend, name))
    return out


def check_functions(exprs: sympy.Basic | Sequence[sympy.Basic], backend: str) -> None:
    """Raise :class:`UnsupportedFunctionError` if an expression uses a function ``backend``
    cannot spell."""
    items = [exprs] if isinstance(exprs, sympy.Basic) else list(exprs)
    for e in items:
        if not isinstance(e, sympy.Basic):
            continue
        for f in e.atoms(sympy.Function):
            name = type(f).__name__
            # field applications are the caller's; implemented functions carry their own
            # callable (``_imp_``, used by ``lambdify``)
            if (
                isinstance(f, sympy.core.function.AppliedUndef)
                or hasattr(type(f), "_imp_")
                or name in _STRUCTURAL
            ):
                continue
            spelling(backend, name)


def lambdify_modules(backend: str) -> list[Any]:
    """``modules=`` for ``sympy.lambdify``: the registry's namespace first, then the backend's
    module for what sympy prints itself (arrays, ``Piecewise``)."""
    return [namespace(backend), backend]


def lepton_call(name: str, args: Sequence[str]) -> str:
    """A Lepton call of sympy function ``name`` on printed arguments ``args``."""
    return spelling("lepton", name).format(*args)


def lambdify(args: Any, expr: Any, backend: str) -> Callable[..., Any]:
    """``sympy.lambdify(args, expr)`` for ``backend`` (numpy or math), after checking that the
    backend spells every function of ``expr``."""
    check_functions(expr if isinstance(expr, sympy.Basic) else list(_flat(expr)), backend)
    return sympy.lambdify(args, expr, modules=lambdify_modules(backend))


def _flat(x: Any) -> Any:
    if isinstance(x, sympy.Basic):
        yield x
    elif isinstance(x, list | tuple):
        for y in x:
            yield from _flat(y)
