r"""How each elementary function of a symbolic expression is spelled by each backend.

One table, :data:`FUNCTIONS`, maps a sympy function (by its class name, the name sympy's own
printers use) to its spelling in every backend:

``torch``
    a torch callable (the generated step source, and :func:`lambdify` over tensors: energies,
    observables, potentials);
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

:func:`lambdify` prints every function of the table as a call into the table's namespace, so
the table is the spelling actually used: sympy's own printers have spellings of their own
(the math printer writes :math:`\operatorname{sign}` with ``math.copysign``, which takes one
number; the torch printer knows no :math:`\operatorname{erfc}`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
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
    "asinh": {
        "torch": "torch.asinh",
        "numpy": "numpy.arcsinh",
        "math": "math.asinh",
        "lepton": "log(({0}) + sqrt(({0})^2 + 1))",
    },
    "acosh": {
        "torch": "torch.acosh",
        "numpy": "numpy.arccosh",
        "math": "math.acosh",
        "lepton": "log(({0}) + sqrt(({0})^2 - 1))",
    },
    "atanh": {
        "torch": "torch.atanh",
        "numpy": "numpy.arctanh",
        "math": "math.atanh",
        "lepton": "(0.5*log((1 + ({0}))/(1 - ({0}))))",
    },
    # two arguments: atan2(y, x), the angle of the point (x, y)
    "atan2": {
        "torch": "torch.atan2",
        "numpy": "numpy.arctan2",
        "math": "math.atan2",
        "lepton": "atan2({0}, {1})",
    },
    "floor": {
        "torch": "torch.floor",
        "numpy": "numpy.floor",
        "math": "math.floor",
        "lepton": "floor({0})",
    },
    "ceiling": {
        "torch": "torch.ceil",
        "numpy": "numpy.ceil",
        "math": "math.ceil",
        "lepton": "ceil({0})",
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
    # log Gamma(x) for x > 0
    "loggamma": {
        "torch": "torch.special.gammaln",
        "numpy": "scipy.special.gammaln",
        "math": "math.lgamma",
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


def lepton_call(name: str, args: Sequence[str]) -> str:
    """A Lepton call of sympy function ``name`` on printed arguments ``args``."""
    return spelling("lepton", name).format(*args)


def _sympy_printer(backend: str) -> type:
    """sympy's code printer for ``backend`` (what ``sympy.lambdify`` would pick)."""
    if backend == "torch":
        from sympy.printing.pytorch import TorchPrinter

        return TorchPrinter
    if backend == "numpy":
        from sympy.printing.numpy import NumPyPrinter

        return NumPyPrinter
    from sympy.printing.pycode import PythonCodePrinter

    return PythonCodePrinter


@cache
def _printer_class(backend: str) -> type:
    base = _sympy_printer(backend)

    class _TablePrinter(base):  # type: ignore[misc, valid-type]
        """sympy's printer for the backend, except that every function named in the
        namespace is printed as a plain call ``name(args)`` resolved in that namespace."""

        def __init__(self, names: frozenset[str], settings: dict[str, Any]) -> None:
            super().__init__(settings)
            self._table_names = names

        def _print(self, expr: Any, **kwargs: Any) -> str:
            if isinstance(expr, sympy.Function) and type(expr).__name__ in self._table_names:
                args = ", ".join(self._print(a) for a in expr.args)
                return f"{type(expr).__name__}({args})"
            return super()._print(expr, **kwargs)

    _TablePrinter.__name__ = f"_{backend.capitalize()}TablePrinter"
    return _TablePrinter


def lambdify(
    args: Any,
    expr: Any,
    backend: str,
    functions: Mapping[str, Callable[..., Any]] | None = None,
) -> Callable[..., Any]:
    """``sympy.lambdify(args, expr)`` for ``backend`` (torch, numpy or math) with the table's
    spellings.

    Every function of ``expr`` must be spelled by ``backend`` (else
    :class:`UnsupportedFunctionError` before any code is generated), and every function of the
    table is called through :func:`namespace` rather than through sympy's own spelling.
    ``functions`` (name -> callable) replaces or extends that namespace for one caller (field
    definitions evaluate on tensors or on floats and pass callables that dispatch on both).
    """
    if backend not in BACKENDS or backend == "lepton":
        raise ValueError(f"lambdify backends are torch, numpy and math; got {backend!r}")
    check_functions(list(_flat(expr)), backend)
    ns = dict(namespace(backend))
    if backend == "torch":
        # torch functions take tensors only: a call on numbers (erfc(1/2) in a coefficient,
        # atan2(q, 2)) gets float64 scalars, which broadcast on any device
        ns = {k: _on_tensors(fn) for k, fn in ns.items()}
    if functions is not None:
        ns.update(functions)
    printer = _printer_class(backend)(
        frozenset(ns),
        {
            # the settings sympy.lambdify gives its own printer
            "fully_qualified_modules": False,
            "inline": True,
            "allow_unknown_functions": True,
            "user_functions": {k: k for k in ns},
        },
    )
    return sympy.lambdify(args, expr, modules=[ns, backend], printer=printer)


def _on_tensors(fn: Callable[..., Any]) -> Callable[..., Any]:
    import torch

    def call(*args: Any) -> Any:
        return fn(
            *(
                a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=torch.float64)
                for a in args
            )
        )

    return call


def _flat(x: Any) -> Any:
    if isinstance(x, sympy.MatrixBase):
        yield from x
    elif isinstance(x, sympy.Basic):
        yield x
    elif isinstance(x, list | tuple):
        for y in x:
            yield from _flat(y)
