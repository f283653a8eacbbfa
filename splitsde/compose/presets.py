"""Named splitting words, as data.

Each preset records the word, aliases, a reference and the properties the test suite checks
(finite-time weak order when every sub-flow is solved exactly, and what is known about the
invariant measure). Letters follow the Langevin convention of :mod:`splitsde.langevin`:
``A`` positions (openmmtools ``R``), ``B`` kicks (``V``), ``O`` exact Ornstein--Uhlenbeck.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitsde.compose.word import Word, WordError

__all__ = ["PRESETS", "Preset", "preset", "word"]


@dataclass(frozen=True)
class Preset:
    name: str
    word: str
    description: str
    reference: str
    weak_order: int
    invariant: str
    aliases: tuple[str, ...] = ()

    @property
    def parsed(self) -> Word:
        return Word(self.word)


_LIE = "Lie--Trotter splitting; Leimkuhler & Matthews, Appl. Math. Res. Express. (2013)"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "BAOAB",
            "BAOAB",
            "kick, drift, exact OU, drift, kick",
            "Leimkuhler & Matthews, Appl. Math. Res. Express. 2013(1):34-56",
            2,
            "configurational averages O(h^2), exact for harmonic potentials; "
            "O(h^4) in the high-friction limit",
        ),
        Preset(
            "ABOBA",
            "ABOBA",
            "drift, kick, exact OU, kick, drift",
            "Leimkuhler & Matthews, Appl. Math. Res. Express. 2013(1):34-56",
            2,
            "configurational and kinetic averages O(h^2)",
        ),
        Preset(
            "OBABO",
            "OBABO",
            "half OU, velocity Verlet, half OU (VVVR / BBK-type)",
            "Sivak, Chodera & Crooks, J. Phys. Chem. B 118 (2014) 6466; Bussi & Parrinello, "
            "Phys. Rev. E 75 (2007) 056707",
            2,
            "averages O(h^2); kinetic energy exact for harmonic potentials",
            aliases=("VVVR",),
        ),
        Preset(
            "OABAO",
            "OABAO",
            "half OU, position Verlet, half OU",
            "Leimkuhler & Matthews, Molecular Dynamics (Springer 2015), sec. 7.4",
            2,
            "averages O(h^2)",
        ),
        Preset(
            "BAOA",
            "BAOA",
            "OpenMM's LangevinMiddleIntegrator: full kick, then A O A; positions equal BAOAB's",
            "Zhang, Liu, Leimkuhler & Chen, J. Phys. Chem. B 123 (2019) 6010 (LangevinMiddle)",
            1,
            "positions identical to BAOAB (configurational averages O(h^2)); "
            "velocities lag half a kick (first order as a full-state scheme)",
            aliases=("LANGEVINMIDDLE",),
        ),
        *[
            Preset(w, w, f"Lie splitting {' '.join(w)}", _LIE, 1, "averages O(h) in general")
            for w in ("ABO", "AOB", "BAO", "BOA", "OAB", "OBA")
        ],
        Preset(
            "GHMC",
            "O{BAB}O",
            "generalized hybrid Monte Carlo: half OU, Metropolized velocity Verlet, half OU",
            "Horowitz, Phys. Lett. B 268 (1991) 247; Lelievre, Rousset & Stoltz, Free Energy "
            "Computations (2010)",
            1,
            "samples the target exactly (Metropolis correction); weak order 1 in time",
        ),
    ]
}

_ALIASES = {a: p.name for p in PRESETS.values() for a in p.aliases}


def preset(name: str) -> Preset:
    """Look up a preset by name or alias (case-insensitive)."""
    if not isinstance(name, str):
        raise WordError(f"a preset name must be a string, got {type(name).__name__}")
    key = name.strip().upper()
    key = _ALIASES.get(key, key)
    try:
        return PRESETS[key]
    except KeyError:
        known = ", ".join(sorted([*PRESETS, *_ALIASES]))
        raise WordError(f"unknown preset {name!r}; presets: {known}") from None


def word(text: str | Word) -> Word:
    """A word from a preset name (``"VVVR"``) or from the grammar (``"B A O A B"``)."""
    if isinstance(text, Word):
        return text
    if not isinstance(text, str):
        raise WordError(f"a word must be a string or a Word, got {type(text).__name__}")
    key = text.strip().upper()
    if key in _ALIASES or (key in PRESETS and PRESETS[key].word != key):
        return preset(key).parsed
    return Word(text)
