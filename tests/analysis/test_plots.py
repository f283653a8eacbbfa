"""Figures of fits and certificates from Python: the file is written and what is drawn is the
data and the fit (the command-line ``--plot`` is tested in ``test_verify_cli.py``)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection

from splitsde import problems
from splitsde.analysis import certificate, estimate_weak_order, plot_certificate, plot_fit
from splitsde.analysis.plot import PlotError, ensure_writable

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ou_result():
    """Lie splitting of OU, E[x_T^2] against its exact value at T = 1 (order 1)."""
    prob = problems.ou(theta=2.0, mu=0.0, sigma=1.5)
    m, S = prob.law(1.0, 2.0, 0.0)
    return estimate_weak_order(
        prob.integrator("BO"),
        [0.025, 0.05, 0.1, 0.2],
        {"x": torch.full((20_000,), 2.0, dtype=torch.float64)},
        lambda s: s["x"] ** 2,
        reference=float(S[0, 0] + m[0] ** 2),
        mode="final",
        T=1.0,
        seed=5,
    )


def test_plot_fit_writes_the_biases_and_the_fitted_curve(ou_result, tmp_path):
    res = ou_result
    assert res.verdict.certified and res.certified_order == 1
    path = tmp_path / "fit.png"
    ax = plot_fit(res, path)
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000
    # the points are |average - reference| at every step of the ladder
    drawn = {}
    for line in ax.lines:
        if line.get_linestyle() == "None" and line.get_marker() in ("o", "s"):
            drawn.update(zip(line.get_xdata(), line.get_ydata()))
    ref = res.fit.reference
    for p in res.points:
        assert drawn[p.h] == pytest.approx(abs(p.estimate.value - ref), rel=1e-12)
    # the curve is C h^p on the fitted steps, p inside the band's interval
    (curve,) = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    h, v = curve.get_xdata(), curve.get_ydata()
    assert h.min() == pytest.approx(min(res.fit.hs)) and h.max() == pytest.approx(max(res.fit.hs))
    fit = res.fit
    expected = np.abs(fit.coefficient * h**fit.order + fit.next_coefficient * h ** (fit.order + 1))
    assert np.allclose(v, expected, rtol=1e-6)
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the confidence band
    assert "certified weak order 1" in ax.get_title()


def test_plot_certificate_of_a_linear_certificate(tmp_path):
    cert = certificate("OBA", "harmonic", h=0.2)
    out = plot_certificate(cert, tmp_path / "cert.svg")
    text = (tmp_path / "cert.svg").read_text()
    assert out == str(tmp_path / "cert.svg") and "<svg" in text and len(text) > 5000
    png = tmp_path / "cert.png"
    plot_certificate(cert, png)
    assert png.read_bytes().startswith(PNG) and png.stat().st_size > 5000


def test_a_figure_that_cannot_be_written_is_refused_before_computing(tmp_path):
    with pytest.raises(PlotError, match="missing"):
        ensure_writable(tmp_path / "missing" / "fit.png")
    with pytest.raises(PlotError, match="suffix"):
        ensure_writable(tmp_path / "fit.txt")
