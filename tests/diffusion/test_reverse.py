"""The reverse-SDE family and its splits, checked against the equations of algorithms.md §2."""

import pytest
import sympy

import splitsde as sd
import splitsde.diffusion as dm


def _syms(rev):
    p = {s.name: s for s in rev.sde("full").parameters}
    x, m = rev.blocks
    sx, sm = rev.score["x"], rev.score["m"]
    return p, x, m, sx, sm


def _same(a, b):
    return sympy.simplify(sympy.expand(a - b)) == 0


@pytest.mark.parametrize("lam_x, lam_m", [(1, 1), (0, 0), (0.5, 1), (2, 0.25)])
def test_psld_reverse_family_matches_the_paper(lam_x, lam_m):
    rev = dm.process("psld-cifar10").reverse({"x": lam_x, "m": lam_m})
    p, x, m, sx, sm = _syms(rev)
    B, G, nu, Mi = p["beta"], p["Gamma"], p["nu"], p["Minv"]
    cx = sympy.Rational(1 + sympy.nsimplify(lam_x) ** 2, 2)
    cm = sympy.Rational(1 + sympy.nsimplify(lam_m) ** 2, 2)
    # lambda = 1: dx = (b/2)[G x - m/M + 2 G s_x] + sqrt(G b) dW; the score term scales by
    # (1 + lambda^2)/2 and the noise by lambda
    assert _same(rev.drift[x], B / 2 * (G * x - Mi * m) + cx * G * B * sx)
    assert _same(rev.drift[m], B / 2 * (x + nu * m) + cm * nu * B / Mi * sm)
    assert _same(rev.noise[x] ** 2, sympy.nsimplify(lam_x) ** 2 * G * B)
    assert _same(rev.noise[m] ** 2, sympy.nsimplify(lam_m) ** 2 * nu * B / Mi)


def test_vp_reverse_uses_reverse_time():
    rev = dm.vp().reverse(1.0)
    p = {s.name: s for s in rev.sde("full").parameters}
    (x,) = rev.blocks
    beta = p["beta_min"] + (p["T"] - sd.t) * (p["beta_max"] - p["beta_min"])
    assert _same(rev.drift[x], beta / 2 * x + beta * rev.score["x"])
    assert _same(rev.noise[x] ** 2, beta)


def test_sscs_split_adds_up_and_matches_the_cld_paper():
    rev = dm.process("psld-cifar10").reverse(1.0)
    sde = rev.sde("sscs")
    p, x, m, sx, sm = _syms(rev)
    B, G, nu, Mi = p["beta"], p["Gamma"], p["nu"], p["Minv"]
    S = sde.flows["S"]
    assert _same(S.drift[x], B * G * (x + sx))
    assert _same(S.drift[m], B * nu / Mi * (Mi * m + sm))
    A = sde.flows["A"]
    assert A.solver.exact and A.solver.method == "linear"
    # the A part is the forward process with the coupling sign flipped: stable OU
    assert _same(A.drift[x], -B / 2 * (G * x + Mi * m))
    assert _same(A.drift[m], B / 2 * (x - nu * m))
    for b in (x, m):  # A + S is the reverse SDE
        assert _same(A.drift[b] + S.drift[b], rev.drift[b])


def test_abo_split_structure_and_dropped_letters():
    rev = dm.process("psld-cifar10").reverse(1.0)
    sde = rev.sde("abo")
    x, m = rev.blocks
    assert set(sde.flows["A"].changed) == {x} and set(sde.flows["B"].changed) == {m}
    assert sde.flows["O"].solver.exact and not sde.flows["O"].drift
    sde = rev.sde("abo-friction")
    assert sde.flows["O"].solver.method == "linear"
    ode = dm.process("psld-cifar10").reverse(0.0)
    assert ode.letters("abo") == ("A", "B")  # no momentum noise at lambda = 0
    assert not ode.sde("full").flows["R"].is_stochastic


@pytest.mark.parametrize("lam_x, lam_m", [(1, 1), (0, 1), (0.5, 0)])
def test_abo_ou_split_keeps_the_momentum_score_with_its_noise(lam_x, lam_m):
    """abo-ou: A = the data equation, B = the momentum kick by the data, O = friction, score
    term and noise of the momentum (algorithms.md section 2, written out by hand)."""
    rev = dm.process("psld-cifar10").reverse({"x": lam_x, "m": lam_m})
    sde = rev.sde("abo-ou")
    p, x, m, sx, sm = _syms(rev)
    B, G, nu, Mi = p["beta"], p["Gamma"], p["nu"], p["Minv"]
    cx = sympy.Rational(1 + sympy.nsimplify(lam_x) ** 2, 2)
    cm = sympy.Rational(1 + sympy.nsimplify(lam_m) ** 2, 2)
    A, K, O = sde.flows["A"], sde.flows["B"], sde.flows["O"]
    assert set(A.changed) == {x} and set(K.changed) == {m} and set(O.changed) == {m}
    assert _same(A.drift[x], B / 2 * (G * x - Mi * m) + cx * G * B * sx)
    assert _same(A.noise.get(x, 0) ** 2, sympy.nsimplify(lam_x) ** 2 * G * B)
    assert _same(K.drift[m], B / 2 * x) and not K.noise
    assert K.solver.exact  # the kick does not depend on m: a shear
    assert _same(O.drift[m], B / 2 * nu * m + cm * nu * B / Mi * sm)
    assert _same(O.noise.get(m, 0) ** 2, sympy.nsimplify(lam_m) ** 2 * nu * B / Mi)
    assert _same(K.drift[m] + O.drift[m], rev.drift[m])
    assert sde.letters == ("A", "B", "O")  # O stays at lambda_m = 0 (friction and score)


def test_user_split():
    rev = dm.process("psld-cifar10").reverse(1.0)
    spec = {
        "P": [("x", "linear"), ("m", "linear")],
        "Q": [("*", "score")],
        "N": [("*", "noise")],
    }
    sde = rev.sde(spec)
    assert sde.letters == ("P", "Q", "N")
    assert sde.flows["P"].solver.exact and sde.flows["N"].solver.exact
    integ = sd.Integrator(sde, "N P Q P N", rev.params_for(sde), {"s": lambda x, m, t: (-x, -m)})
    assert integ.evaluations_per_step == 1


@pytest.mark.parametrize(
    "spec, msg",
    [
        (
            {"A": [("x", "drift")], "B": [("m", "drift"), ("*", "noise")], "C": [("x", "score")]},
            "score used 2 times",
        ),
        ({"A": [("*", "drift")]}, "noise used 0 times"),
        (
            {"A": [("*", "linear_ref"), ("*", "noise")], "B": [("*", "score")]},
            "linear_ref without score_ref",
        ),
        ({"A": [("q", "drift")]}, "has blocks x, m"),
        ({"A": [("x", "momentum")]}, "unknown part"),
        ({"A": ["x"]}, "pairs"),
    ],
)
def test_bad_splits_are_rejected(spec, msg):
    rev = dm.process("psld-cifar10").reverse(1.0)
    with pytest.raises(ValueError, match=msg):
        rev.sde(spec)


def test_bad_noise_scales_and_split_names():
    proc = dm.process("psld-cifar10")
    with pytest.raises(ValueError, match=">= 0"):
        proc.reverse(-1.0)
    with pytest.raises(ValueError, match="unknown block"):
        proc.reverse({"v": 0.5})
    with pytest.raises(ValueError, match="named splits"):
        proc.reverse(1.0).sde("strang")
    with pytest.raises(ValueError, match="has blocks x"):
        dm.vp().reverse(1.0).sde("abo")
