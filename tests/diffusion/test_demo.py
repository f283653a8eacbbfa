"""The diffusion section of ``splitsde demo`` in quick mode."""

from splitsde.apps.demo import SECTIONS


def test_diffusion_demo_quick(tmp_path, capsys):
    out = SECTIONS["diffusion"](tmp_path, quick=True)
    text = capsys.readouterr().out
    assert "em" in text and "sps" in text and "floor" in text
    assert (tmp_path / "diffusion_mixture.png").stat().st_size > 0
    rows = {(r["sampler"], r["nfe_budget"]) for r in out["rows"]}
    assert rows == {("em", 10), ("em", 20), ("sps", 10), ("sps", 20)}
