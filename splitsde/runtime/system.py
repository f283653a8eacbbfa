"""A system: an SDE with parameter values and bound fields, ready to build integrators.

Instances (Langevin dynamics, diffusion samplers, test problems) return systems; a user can
build one directly from any :class:`~splitsde.symbolic.sde.SDE`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from splitsde.compose.reduce import ReducedWord, Reduction
from splitsde.compose.word import Word
from splitsde.runtime.integrator import Integrator
from splitsde.symbolic.sde import SDE
from splitsde.symbolic.solve import SolverStrategy
from splitsde.symbolic.symbols import Parameter

__all__ = ["System"]


class System:
    """SDE + parameter values + field callables.

    >>> import splitsde as sd
    >>> q, p = sd.blocks("q p")
    >>> F = sd.Field("F", [q], definition=-q)
    >>> sde = sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})
    >>> sd.System(sde).integrator("BAB").evaluations_per_step
    1
    """

    def __init__(
        self,
        sde: SDE,
        params: Mapping[str | Parameter, Any] | None = None,
        fields: Mapping[str, Callable[..., Any]] | None = None,
        name: str = "",
    ) -> None:
        self.sde = sde
        self.params = dict(params or {})
        self.fields = dict(fields or {})
        self.name = name or sde.name

    def integrator(
        self,
        word: str | Word | ReducedWord,
        *,
        reduction: Reduction | None = None,
        solvers: Mapping[str, SolverStrategy] | None = None,
        allow_missing: bool = False,
        inplace: bool = True,
        **kwargs: Any,
    ) -> Integrator:
        """An :class:`~splitsde.runtime.integrator.Integrator` for ``word`` on this system."""
        return Integrator(
            self.sde,
            word,
            self.params,
            self.fields,
            reduction=reduction,
            solvers=solvers,
            allow_missing=allow_missing,
            inplace=inplace,
            **kwargs,
        )

    def with_params(self, **params: Any) -> System:
        """A copy with some parameter values changed."""
        new = dict(self.params)
        new.update(params)
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.params = new
        return out

    def __repr__(self) -> str:
        ps = ", ".join(f"{k if isinstance(k, str) else k.name}={v}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name}; {ps})"
