"""Lowered integrators and the integrate loop: sampling accuracy against exact Boltzmann
statistics, measured NFE, reproducibility, reductions, shapes and dtypes, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import sympy as sp
import torch

import splitsde as sd
from splitsde.base.stats import walker_batch_means


def harmonic(omega=1.0, gamma=1.0, kT=1.0, mass=1.0):
    return sd.langevin.underdamped(sd.potentials.Harmonic(omega), gamma=gamma, kT=kT, mass=mass)


def stationary(integ, y0, h, burn, steps, seed=0, block="q"):
    obs = [sd.Running(lambda t, s: s[block], block, burn_in=burn)]
    res = sd.integrate(integ, y0, h=h, steps=burn + steps, seed=seed, observers=obs)
    return walker_batch_means(res.finals[block]["mean"], res.finals[block]["mean_sq"]), res


def test_baoab_samples_harmonic_positions_exactly_at_large_step():
    system = harmonic()
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(100_000, generator=torch.Generator().manual_seed(3))
    st, _ = stationary(integ, y0, h=0.5, burn=100, steps=200)
    var, se = float(st["var"][0]), float(st["var_se"][0])
    assert abs(var - 1.0) < 4 * se, (var, se)
    # momenta are biased at this h (kT (1 - h^2/4) for BAOAB): the test above can fail
    stp, _ = stationary(integ, y0, h=0.5, burn=100, steps=200, block="p")
    assert abs(float(stp["var"][0]) - (1 - 0.25**2)) < 4 * float(stp["var_se"][0])


# -- double well: the BAOAB position histogram approaches the Boltzmann density ---------------
# U(q) = (q^2 - 1)^2 (sd.potentials.DoubleWell()), kT = 1. The density and BAOAB are both
# symmetric under q -> -q, so the histogram is taken of |q|: folding loses none of the h^2
# configurational bias but removes the slow well-to-well hopping from the noise.
DW_EDGES = np.linspace(0.0, 2.2, 23)  # bins of |q|: [0, 0.1), ..., [2.1, 2.2), [2.2, inf)
DW_GAMMA = 0.5  # BAOAB's configurational bias shrinks as gamma grows (high-friction limit)


def dw_energy(x):
    return (x * x - 1.0) ** 2


def dw_bin_probabilities() -> np.ndarray:
    """Boltzmann probabilities of the |q| bins by quadrature of exp(-U) (closed-form U)."""
    w = lambda x: math.exp(-dw_energy(x))  # noqa: E731
    z = scipy.integrate.quad(w, 0.0, 6.0, epsabs=1e-13)[0]
    upper = [*DW_EDGES[1:], 6.0]
    return np.array([scipy.integrate.quad(w, a, b)[0] for a, b in zip(DW_EDGES, upper)]) / z


def dw_boltzmann_positions(walkers: int, seed: int) -> torch.Tensor:
    """Boltzmann positions (inverse of the CDF tabulated on a fine grid), so the burn-in only
    has to relax the small discretisation bias."""
    x = np.linspace(-3.0, 3.0, 60_001)
    w = np.exp(-dw_energy(x))
    cdf = np.concatenate([[0.0], np.cumsum(w[1:] + w[:-1])])
    u = np.random.default_rng(seed).random(walkers)
    return torch.from_numpy(np.interp(u, cdf / cdf[-1], x)).reshape(walkers, 1)


class FoldedHistogram(sd.Observer):
    """Per-walker time averages of the |q| bin indicators (after a burn-in, every few
    steps): one independent histogram per walker."""

    name = "hist"

    def __init__(self, burn_in: int, every: int) -> None:
        self.burn_in, self.stride = burn_in, every
        self.inner = torch.as_tensor(DW_EDGES[1:])
        self.counts: torch.Tensor | None = None
        self.samples = 0

    def on_step(self, step, t, state):
        if step + 1 <= self.burn_in or (step + 1 - self.burn_in) % self.stride:
            return None
        q = state["q"][:, 0].abs()
        k = len(DW_EDGES)
        if self.counts is None:
            self.counts = torch.zeros(len(q) * k, dtype=torch.float64)
            self.offset = torch.arange(len(q)) * k
            self.one = torch.ones(len(q), dtype=torch.float64)
        self.counts.index_add_(0, self.offset + torch.bucketize(q, self.inner), self.one)
        self.samples += 1
        return None

    def finish(self):
        return self.counts.reshape(-1, len(DW_EDGES)) / self.samples


def dw_histogram_error(h: float, walkers: int, seed: int) -> tuple[float, float]:
    """Squared distance sum_k (p_hat_k - p_k)^2 between the BAOAB |q| histogram and the
    Boltzmann bin probabilities, minus its expected sampling part sum_k Var(p_hat_k): an
    unbiased estimate of the squared bias sum_k (E p_hat_k - p_k)^2. Returns it with its
    standard error (delta method over independent walkers; using the noisy p_hat - p in it
    makes the error bar slightly conservative)."""
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=DW_GAMMA, kT=1.0)
    y0 = system.initial_state(walkers, generator=torch.Generator().manual_seed(seed))
    y0["q"] = dw_boltzmann_positions(walkers, seed)
    burn, steps = round(10 / h), round(100 / h)
    hist = FoldedHistogram(burn, every=round(0.4 / h))
    sd.integrate(
        system.integrator("BAOAB"), y0, h=h, steps=burn + steps, seed=seed, observers=[hist]
    )
    m = hist.finish().numpy()  # (walkers, bins), rows independent
    cov = np.cov(m, rowvar=False) / walkers  # covariance of p_hat
    bias = m.mean(axis=0) - dw_bin_probabilities()
    err = float(bias @ bias - np.trace(cov))
    se = math.sqrt(4 * bias @ cov @ bias + 2 * np.sum(cov * cov))
    return err, se


DW_SEED = 0


def test_double_well_histogram_approaches_boltzmann_as_h_decreases():
    # BAOAB's O(h^2) configurational bias: the squared error falls ~16x from h = 0.2 to 0.1
    coarse, se_c = dw_histogram_error(0.2, 120_000, DW_SEED)
    fine, se_f = dw_histogram_error(0.1, 24_000, DW_SEED + 1)
    assert coarse > 4 * se_c, (coarse, se_c)  # the coarse error is resolved
    assert coarse - fine > 4 * math.hypot(se_c, se_f), (coarse, se_c, fine, se_f)


@pytest.mark.parametrize(
    ("word", "nfe"),
    [
        ("BAOAB", 1),
        ("ABOBA", 1),
        ("OBABO", 1),
        ("OBA", 1),
        ("BAB O", 1),
        ("B A B O B A B", 2),
        ("BAOA", 1),
    ],
)
def test_measured_nfe_per_step(word, nfe):
    system = harmonic()
    integ = system.integrator(word)
    y0 = system.initial_state(8)
    res = sd.integrate(integ, y0, h=0.1, steps=20, seed=0)
    assert res.nfe_per_step == nfe == integ.evaluations_per_step
    assert res.nfe == res.nfe_first_step + 19 * nfe


def test_naive_reuse_costs_what_the_derivation_says():
    system = harmonic()
    y0 = system.initial_state(4)
    none = system.integrator("BAOAB", reduction=sd.Reduction(reuse="none"))
    res = sd.integrate(none, y0, h=0.1, steps=10, seed=0)
    assert res.nfe == 20 and none.evaluations_per_step == 2
    exact = sd.integrate(system.integrator("BAOAB"), y0, h=0.1, steps=10, seed=0)
    torch.testing.assert_close(res.final["q"], exact.final["q"], rtol=0, atol=0)


def test_per_step_reuse_evaluates_once_per_step():
    system = harmonic()
    integ = system.integrator(sd.reduce("BAOAB", reuse="per_step"))
    res = sd.integrate(integ, system.initial_state(4), h=0.1, steps=10, seed=0)
    assert res.nfe == 10 and integ.weak_order == 1


def test_same_seed_same_path_different_seed_different_path():
    system = harmonic()
    integ = system.integrator("OBABO")
    y0 = system.initial_state(64)
    runs = [sd.integrate(integ, y0, h=0.2, steps=50, seed=s, save_every=10) for s in (7, 7, 8)]
    for name in ("q", "p"):
        assert torch.equal(runs[0].states[name], runs[1].states[name])
        assert not torch.equal(runs[0].states[name], runs[2].states[name])
    g = torch.Generator().manual_seed(7)
    assert torch.equal(
        sd.integrate(integ, y0, h=0.2, steps=50, generator=g).final["q"], runs[0].final["q"]
    )


def test_hand_written_baoab_matches_to_rounding_with_the_same_noise():
    # coefficients are computed by different (equivalent) formulas, hence rounding-level gaps
    system = harmonic(omega=1.3, gamma=0.7, kT=0.9)
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(16, generator=torch.Generator().manual_seed(0))
    h, n = 0.3, 25
    res = sd.integrate(integ, y0, h=h, steps=n, seed=5)
    q, p = y0["q"].clone(), y0["p"].clone()
    g = torch.Generator().manual_seed(5)
    c = math.exp(-0.7 * h)
    s = math.sqrt(0.9 * (1 - c * c))
    f = q * (-(1.3**2))
    for _ in range(n):
        p.add_(f, alpha=h / 2)
        q.add_(p, alpha=h / 2)
        p.mul_(c).add_(torch.randn(p.shape, generator=g), alpha=s)
        q.add_(p, alpha=h / 2)
        f = q * (-(1.3**2))
        p.add_(f, alpha=h / 2)
    torch.testing.assert_close(res.final["q"], q, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(res.final["p"], p, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3), (3,)])
def test_any_shape_and_dtype(dtype, shape):
    system = harmonic()
    integ = system.integrator("BAOAB")
    y0 = {"q": torch.zeros(shape, dtype=dtype), "p": torch.ones(shape, dtype=dtype)}
    res = sd.integrate(integ, y0, h=0.1, steps=5, seed=0, save_every=2)
    assert res.final["q"].dtype == dtype and res.final["q"].shape == shape
    assert res.states["p"].shape == (4, *shape)
    assert torch.equal(y0["q"], torch.zeros(shape, dtype=dtype))  # input untouched


def test_float32_and_float64_agree_statistically():
    system = harmonic()
    integ = system.integrator("OBABO")
    out = {}
    for dt in (torch.float32, torch.float64):
        y0 = system.initial_state(20_000, dtype=dt)
        st, _ = stationary(integ, y0, h=0.3, burn=50, steps=200)
        out[dt] = (float(st["var"][0]), float(st["var_se"][0]))
    (a, sa), (b, sb) = out.values()
    assert abs(a - b) < 4 * math.hypot(sa, sb)


def test_per_particle_masses_broadcast():
    masses = torch.tensor([[1.0], [4.0], [9.0]], dtype=torch.float64)
    system = harmonic(mass=masses)
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(20_000, dim=(3, 1))
    st, _ = stationary(integ, y0, h=0.3, burn=100, steps=200, block="p")
    var, se = st["var"].reshape(-1), st["var_se"].reshape(-1)
    # BAOAB momentum variance on the harmonic oscillator: kT m (1 - h^2 omega^2 / (4 m))
    expected = (masses.reshape(-1) * (1 - 0.09 / (4 * masses.reshape(-1)))).numpy()
    assert np.all(np.abs(var - expected) < 4 * se), (var, expected, se)


def test_time_dependent_field_receives_slice_start_time():
    x = sd.Block("x")
    seen = []
    F = sd.Field("F", [x], time=True)

    def field(xx, t):
        seen.append(t)
        return torch.full_like(xx, t)

    sde = sd.SDE([x], {"B": sd.Flow({x: F()})})
    integ = sd.Integrator(sde, "B[1/4] B[3/4]", {}, {"F": field})
    res = sd.integrate(integ, {"x": torch.zeros(2, 1)}, t0=1.0, h=0.4, steps=2, seed=0)
    assert seen == pytest.approx([1.0, 1.1, 1.4, 1.5])
    # x(T) = sum over slices of (slice length) * (slice start time): the Euler rule
    assert float(res.final["x"][0]) == pytest.approx(0.1 * 1.0 + 0.3 * 1.1 + 0.1 * 1.4 + 0.3 * 1.5)


def test_grid_is_used_as_given():
    system = harmonic(gamma=0.0)
    integ = system.integrator("BAB", allow_missing=True)
    grid = [0.0, 0.1, 0.35, 0.4]
    res = sd.integrate(integ, {"q": torch.ones(1, 1), "p": torch.zeros(1, 1)}, grid=grid, seed=0)
    assert res.steps == 3
    q, p = 1.0, 0.0
    for h in np.diff(grid):  # velocity Verlet by hand
        p += h / 2 * (-q)
        q += h * p
        p += h / 2 * (-q)
    assert float(res.final["q"]) == pytest.approx(q, rel=1e-14)


def test_observers_and_saving():
    system = harmonic()
    integ = system.integrator("BAOAB")
    ke = sd.observe(lambda t, s: sd.langevin.kinetic_temperature(s).mean(), "T_kin", every=5)
    res = sd.integrate(
        integ,
        system.initial_state(10),
        h=0.1,
        steps=20,
        seed=0,
        observers=[ke],
        save_every=10,
        save=["q"],
    )
    assert res.observables["T_kin"].shape == (4,)
    assert list(res.observable_times["T_kin"]) == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert set(res.states) == {"q"} and list(res.times) == pytest.approx([0.0, 1.0, 2.0])


# -- devices -----------------------------------------------------------------------------------
class HostNoise(sd.NoiseSource):
    """Standard normals drawn on the CPU from one seeded generator, then moved to the state's
    device: runs on different devices see the same noise."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def bind(self, shapes, like):
        def draw(shape):
            return torch.randn(shape, generator=self.generator, dtype=like.dtype).to(like.device)

        return [lambda s=tuple(s): draw(s) for s in shapes]


def check_device_against_cpu(device: str) -> None:
    system = harmonic(omega=1.3, gamma=0.7, kT=0.9)
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(64, generator=torch.Generator().manual_seed(0))
    # the same noise: the same path up to rounding (the harmonic step is contracting)
    runs = {
        d: sd.integrate(
            integ, {k: v.to(d) for k, v in y0.items()}, h=0.3, steps=50, noise=HostNoise(4)
        )
        for d in ("cpu", device)
    }
    for name in ("q", "p"):
        out = runs[device].final[name]
        assert out.device.type == torch.device(device).type and out.dtype == torch.float64
        torch.testing.assert_close(out.cpu(), runs["cpu"].final[name], rtol=1e-10, atol=1e-12)
    assert runs[device].nfe == runs["cpu"].nfe
    # the device's own generator: BAOAB samples harmonic positions exactly, var = kT / omega^2
    big = system.initial_state(20_000, generator=torch.Generator().manual_seed(1))
    st, _ = stationary(integ, {k: v.to(device) for k, v in big.items()}, h=0.5, burn=50, steps=100)
    var, se = float(st["var"][0]), float(st["var_se"][0])
    assert abs(var - 0.9 / 1.3**2) < 4 * se, (var, se)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_agrees_with_cpu():
    check_device_against_cpu("cuda")


# -- bad input ---------------------------------------------------------------------------------
def test_missing_flow_is_an_error_unless_allowed():
    system = harmonic()
    with pytest.raises(sd.WordError, match="leaves out flow"):
        system.integrator("BAB")
    assert system.integrator("BAB", allow_missing=True).evaluations_per_step == 1


def test_unknown_letter_lists_valid_ones():
    with pytest.raises(sd.WordError, match="valid letters: A, B, O"):
        harmonic().integrator("BARAB")


def test_negative_weight_on_stochastic_flow_is_refused():
    with pytest.raises(sd.WordError, match="negative weight"):
        harmonic().integrator("B A O[-1/2] O[3/2] A B")


def test_state_mismatches_are_reported():
    integ = harmonic().integrator("BAOAB")
    ok = {"q": torch.zeros(3, 1), "p": torch.zeros(3, 1)}
    cases = [
        ({"q": torch.zeros(3, 1)}, "misses block"),
        ({**ok, "r": torch.zeros(3, 1)}, "unknown block"),
        ({"q": torch.zeros(3, 1), "p": torch.zeros(3, 1, dtype=torch.float32)}, "dtype"),
        ({"q": torch.zeros(3, 1, dtype=torch.int64), "p": torch.zeros(3, 1)}, "floating"),
        ({"q": torch.zeros(3, 1), "p": torch.zeros(3, 1, device="meta")}, "is on"),
    ]
    for state, msg in cases:
        with pytest.raises(sd.StateError, match=msg):
            sd.integrate(integ, state, h=0.1, steps=1, seed=0)
    strict = harmonic().integrator("BAOAB", dtype=torch.float32)
    with pytest.raises(sd.StateError, match=r"built for torch\.float32"):
        sd.integrate(strict, ok, h=0.1, steps=1, seed=0)
    masses = harmonic(mass=torch.ones(4, 1)).integrator("BAOAB")
    with pytest.raises(sd.StateError, match="does not broadcast"):
        sd.integrate(masses, {"q": torch.zeros(3, 5, 1), "p": torch.zeros(3, 5, 1)}, h=0.1, steps=1)


def test_field_of_wrong_shape_is_reported():
    q, p = sd.blocks("q p")
    F = sd.Field("F", [q])
    sde = sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})
    integ = sd.Integrator(sde, "BAB", {}, {"F": lambda x: x.sum(-1)})
    with pytest.raises(sd.FieldError, match=r"shape \(3,\), expected \(3, 2\)"):
        sd.integrate(integ, {"q": torch.ones(3, 2), "p": torch.ones(3, 2)}, h=0.1, steps=2)
    alias = sd.Integrator(sde, "BAB", {}, {"F": lambda x: x[:]})
    with pytest.raises(sd.FieldError, match="view of its input"):
        sd.integrate(alias, {"q": torch.ones(3, 2), "p": torch.ones(3, 2)}, h=0.1, steps=2)


def test_non_finite_state_names_step_and_substep():
    system = sd.langevin.underdamped(sd.potentials.DoubleWell(), gamma=1.0, kT=1.0)
    integ = system.integrator("BAOAB")
    y0 = {"q": torch.full((4, 1), 1.0), "p": torch.zeros(4, 1)}
    y0["p"][2] = 40.0  # one walker flies off and overflows after a few steps
    with pytest.raises(sd.NonFiniteError) as err:
        sd.integrate(integ, y0, h=0.2, steps=500, seed=0, check_every=100)
    msg = str(err.value)
    assert f"step {err.value.step} " in msg and "sub-step" in msg


def test_non_finite_state_with_linear_force_names_the_block():
    system = harmonic(omega=30.0)  # h * omega = 6 > 2: BAOAB is unstable
    integ = system.integrator("BAOAB")
    y0 = {"q": torch.ones(2, 1), "p": torch.zeros(2, 1)}
    with pytest.raises(sd.NonFiniteError) as err:
        sd.integrate(integ, y0, h=0.2, steps=2000, seed=0, check_every=500)
    assert err.value.step is not None and err.value.substep is not None
    assert err.value.step < 2000 and err.value.block in ("q", "p", None)
    assert f"step {err.value.step}" in str(err.value) and "stability" in str(err.value)


def test_bad_grids_and_parameters():
    system = harmonic()
    integ = system.integrator("BAOAB")
    y0 = system.initial_state(2)
    with pytest.raises(ValueError, match="strictly increasing"):
        sd.integrate(integ, y0, grid=[0.0, 0.2, 0.1], seed=0)
    with pytest.raises(ValueError, match="not a positive integer"):
        sd.integrate(integ, y0, h=0.3, t1=1.0, seed=0)
    with pytest.raises(ValueError, match="missing value"):
        sd.Integrator(system.sde, "BAOAB", {"gamma": 1.0}, system.fields)
    with pytest.raises(ValueError, match="unknown parameter"):
        sd.Integrator(system.sde, "BAOAB", {**system.params, "beta": 1.0}, system.fields)
    with pytest.raises(ValueError, match="needs a callable"):
        q, p = sd.blocks("q p")
        G = sd.Field("G", [q])
        sd.Integrator(sd.SDE([q, p], {"B": sd.Flow({p: G()})}), "B", {})


def test_field_definition_is_lowered_when_no_callable_is_given():
    q, p = sd.blocks("q p")
    w = sd.Parameter("omega", positive=True)
    F = sd.Field("F", [q], definition=-(w**2) * q)
    sde = sd.SDE([q, p], {"A": sd.Flow({q: p}), "B": sd.Flow({p: F()})})
    integ = sd.Integrator(sde, "BAB", {"omega": 2.0})
    out = integ.step({"q": torch.ones(1, 1), "p": torch.zeros(1, 1)}, 0.0, 0.1)
    assert float(out["p"]) == pytest.approx(-0.05 * 4 + -0.05 * 4 * (1 - 0.1 * 0.05 * 4))


def test_sympy_potential_force_and_exact_moments():
    pot = sd.potentials.SympyPotential("(q**2 - 1)**2")
    ref = sd.potentials.DoubleWell()
    x = torch.linspace(-2, 2, 9).reshape(-1, 1)
    torch.testing.assert_close(pot.force(x), ref.force(x))
    assert pot.moments(1.0)["var"] == pytest.approx(ref.moments(1.0)["var"], rel=1e-9)
    assert sp.simplify(pot.symbolic_force() - ref.symbolic_force()) == 0
