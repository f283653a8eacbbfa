"""The "certificates" section of ``splitsde demo``."""

from __future__ import annotations

import pytest

from splitsde.apps.demo import SECTIONS, certificates


def test_certificates_section(tmp_path, capsys):
    assert SECTIONS["certificates"] is certificates
    out = certificates(tmp_path, quick=True, h=0.25)
    text = capsys.readouterr().out
    assert "BAOAB" in text and "OBA" in text
    assert {w: out[w]["weak_order"] for w in ("BAOAB", "ABOBA", "OBABO", "OBA")} == {
        "BAOAB": 2,
        "ABOBA": 2,
        "OBABO": 2,
        "OBA": 1,
    }
    assert all(out[w]["nfe_per_step"] == 1.0 for w in ("BAOAB", "ABOBA", "OBABO", "OBA"))
    # BAOAB/ABOBA sample positions exactly, OBABO momenta; closed forms for the others
    assert abs(out["BAOAB"]["relative_bias"]["q2"]) < 1e-12
    assert abs(out["OBABO"]["relative_bias"]["p2"]) < 1e-12
    assert out["BAOAB"]["relative_bias"]["p2"] == pytest.approx(-(0.25**2) / 4, rel=1e-10)
    assert out["OBABO"]["relative_bias"]["q2"] == pytest.approx(
        1 / (1 - 0.25**2 / 4) - 1, rel=1e-10
    )
    assert (tmp_path / "certificates_stationary_bias.png").stat().st_size > 1000
