r"""The one registry of diffusion samplers, and the front doors that look names up in it.

Every sampler family lives in its own module and exposes its members as a plain dictionary;
this module imports the families and lists them, in this order, in :data:`SAMPLERS` -- a
read-only mapping: no module adds to it at import time, and a name is defined once (a
duplicate is an error when the registry is built).

======================  =================================================================
family                  module
======================  =================================================================
splitting, reduced,     :mod:`splitsde.diffusion.samplers` (``em``, ``sscs``, ``oba``,
naive                   ``reduced-oba``, ``sps``, ...)
exponential             :mod:`splitsde.diffusion.exponential` (``ddim``, ``deis-*``,
integrators             ``rhork-*``, ``ipndm``, ``ei-sde``, ``ddpm``)
conjugate exponential   :mod:`splitsde.diffusion.conjugate` (``cddim``, ``cddim-sde``,
integrators             ``cdeis1..3``)
conjugate splitting     :mod:`splitsde.diffusion.conjsplit` (``conj-op``,
                        ``conj-reduced-op``)
Poisson midpoint        :mod:`splitsde.diffusion.midpoint` (``pmm1-k20``, ...)
probability-flow ODE    :mod:`splitsde.diffusion.pfode` (``pf-dopri5``, ``pf-rk4``)
======================  =================================================================

Every entry satisfies :class:`~splitsde.diffusion.protocols.SamplerProtocol`;
:func:`splitsde.diffusion.planning.plan` compiles any of them through that protocol and
:func:`splitsde.diffusion.planning.sample` runs the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from splitsde.diffusion.conjsplit import CONJUGATE_SPLITTING_SAMPLERS
from splitsde.diffusion.conjugate import CONJUGATE_SAMPLERS
from splitsde.diffusion.exponential import EXPONENTIAL_SAMPLERS
from splitsde.diffusion.midpoint import POISSON_SAMPLERS
from splitsde.diffusion.pfode import PFODE_SAMPLERS
from splitsde.diffusion.protocols import SamplerProtocol
from splitsde.diffusion.samplers import SPLITTING_SAMPLERS

__all__ = ["SAMPLERS", "SAMPLER_FAMILIES", "sampler"]

#: The sampler families, by name, in the order of :data:`SAMPLERS`.
SAMPLER_FAMILIES: Mapping[str, Mapping[str, SamplerProtocol]] = MappingProxyType(
    {
        "splitting": MappingProxyType(SPLITTING_SAMPLERS),
        "exponential": MappingProxyType(EXPONENTIAL_SAMPLERS),
        "conjugate": MappingProxyType(CONJUGATE_SAMPLERS),
        "conjugate-splitting": MappingProxyType(CONJUGATE_SPLITTING_SAMPLERS),
        "poisson-midpoint": MappingProxyType(POISSON_SAMPLERS),
        "pf-ode": MappingProxyType(PFODE_SAMPLERS),
    }
)


def _collect(families: Mapping[str, Mapping[str, SamplerProtocol]]) -> dict[str, SamplerProtocol]:
    out: dict[str, SamplerProtocol] = {}
    for family, members in families.items():
        for name, s in members.items():
            if name != s.name:
                raise ValueError(f"sampler family {family}: entry {name!r} holds {s.name!r}")
            if name in out:
                raise ValueError(f"sampler name {name!r} is defined twice (family {family})")
            out[name] = s
    return out


#: Every registered sampler by name (read-only).
SAMPLERS: Mapping[str, SamplerProtocol] = MappingProxyType(_collect(SAMPLER_FAMILIES))


def sampler(name: str | SamplerProtocol, **options: Any) -> SamplerProtocol:
    """A registered sampler by name (or a sampler object as is), with options applied by the
    sampler's :meth:`~splitsde.diffusion.protocols.SamplerProtocol.configure`: for the
    splitting family ``lam`` (noise scales), ``lam_s`` (the data-block noise scale of SPS),
    ``eval_at`` / ``time_label`` (reduced variants), ``solvers``."""
    if isinstance(name, str):
        key = name.strip().lower()
        if key not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; samplers: {', '.join(SAMPLERS)}")
        s = SAMPLERS[key]
    else:
        s = name
    return s.configure(**options) if options else s
