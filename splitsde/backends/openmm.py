r"""Words to OpenMM: a splitting compiled to an :class:`openmm.CustomIntegrator`.

The Langevin letters of :mod:`splitsde.langevin` run on OpenMM's platforms (Reference, CPU,
CUDA, OpenCL) on real molecular systems:

=======  ==============================================  =====================================
letter   sub-flow over a slice of length :math:`s`        OpenMM computation
=======  ==============================================  =====================================
``A``    :math:`q \leftarrow q + s M^{-1} p`              ``x = x + c*v``, then constrain ``x``
                                                          and correct ``v`` by
                                                          :math:`(x - x_1)/s`
``B``    :math:`p \leftarrow p + s F(q)`                  ``v = v + c_m*f``, constrain ``v``
``Bk``   the same with the forces of force group k        ``v = v + c_m*fk``, constrain ``v``
``O``    :math:`p \leftarrow e^{-\gamma s} p +            ``v = a*v + b_m*gaussian``,
         \sqrt{k_BT(1 - e^{-2\gamma s})}\,M^{1/2}\xi`     constrain ``v``
``{ }``  Metropolized group (GHMC)                        energies, ``uniform``; on rejection
                                                          restore ``x`` (and constrain it: the
                                                          constraint reference) and flip ``v``
=======  ==============================================  =====================================

The OpenMM program is **translated from the same symbolic step program** the torch backend
lowers (:func:`splitsde.compose.builder.build_program`): each ``Assign`` becomes a per-DOF
computation after substituting :math:`p = m v`, :math:`M = m`, :math:`h = dt`. The word grammar,
the letter-count weights and the evaluation-reuse rules are therefore identical in both
backends; a program that OpenMM cannot express (a force reused after the positions moved, as
``reuse="per_step"`` does, or letters other than A, B, Bk, O) is refused with a
:class:`~splitsde.compose.word.WordError`.

State-free coefficients (:math:`e^{-\gamma s}`, :math:`\sqrt{k_BT(1-e^{-2\gamma s})/m}`,
:math:`s/m`, ...) are computed once, in an ``if`` block that runs again only when ``kT``,
``gamma`` or ``dt`` change (:meth:`LangevinSplittingIntegrator.setTemperature` just sets
``kT``). Units are OpenMM's: nm, ps, amu, kJ/mol.

The backend is split into modules of one concept each, re-exported here:
:mod:`~splitsde.backends.openmm_program` (step program to OpenMM computations),
:mod:`~splitsde.backends.openmm_integrator` (the ``CustomIntegrator`` and its OpenMM
interface), :mod:`~splitsde.backends.openmm_system` (units, degrees of freedom, force-group
checks), :mod:`~splitsde.backends.openmm_checkpoint` (checksummed checkpoints),
:mod:`~splitsde.backends.openmm_potential` (OpenMM forces for the torch backend).

References: Leimkuhler & Matthews, Appl. Math. Res. Express. 2013 (BAOAB); Fass et al.,
Entropy 20 (2018) 318 (splittings, force groups and shadow work in OpenMM custom integrators);
Horowitz, Phys. Lett. B 268 (1991) 247 (GHMC); Zhang et al., J. Phys. Chem. B 123 (2019) 6010
(OpenMM's LangevinMiddleIntegrator, BAOA).
"""

from splitsde.backends.openmm_checkpoint import (
    ChecksummedCheckpointReporter,
    load_checkpoint,
    save_checkpoint,
)
from splitsde.backends.openmm_integrator import (
    LangevinSplittingIntegrator,
    SplittingWarning,
    make_context,
)
from splitsde.backends.openmm_potential import OpenMMPotential, openmm_langevin
from splitsde.backends.openmm_program import langevin_program
from splitsde.backends.openmm_system import (
    BOLTZMANN,
    OpenMMError,
    degrees_of_freedom,
    force_groups,
    kinetic_temperature,
)

# users meet these classes here: name this module in reprs, error messages and pickles
for _cls in (
    ChecksummedCheckpointReporter,
    LangevinSplittingIntegrator,
    OpenMMError,
    OpenMMPotential,
    SplittingWarning,
):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "BOLTZMANN",
    "ChecksummedCheckpointReporter",
    "LangevinSplittingIntegrator",
    "OpenMMError",
    "OpenMMPotential",
    "SplittingWarning",
    "degrees_of_freedom",
    "force_groups",
    "kinetic_temperature",
    "langevin_program",
    "load_checkpoint",
    "make_context",
    "openmm_langevin",
    "save_checkpoint",
]
