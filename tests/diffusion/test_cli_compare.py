"""``splitsde compare``."""

import json

import pytest

from splitsde.cli import main


def test_compare_table_and_json(capsys, tmp_path):
    png = tmp_path / "q.png"
    argv = [
        "compare",
        "--process",
        "psld-cifar10",
        "--target",
        "ring-4",
        "--samplers",
        "em,reduced-oba,vv",
        "--nfe",
        "3,8",
        "--n",
        "200",
        "--no-progress",
    ]
    assert main([*argv, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "sliced_w2 on 4 modes on a ring" in out and "reduced-oba" in out
    assert "budget<1 step" in out  # vv needs 3 evaluations + 1 for the denoising step
    assert png.stat().st_size > 0
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {(r["sampler"], r["nfe_budget"]): r for r in data["rows"]}
    assert rows[("em", 8)]["nfe"] == 8 and rows[("em", 8)]["steps"] == 7
    assert rows[("vv", 8)]["nfe"] == 7  # two naive steps of 3 evaluations + denoising
    assert "too small for vv" in rows[("vv", 3)]["error"]
    assert rows[("em", 3)]["sliced_w2_se"] > 0


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--samplers", "heun"], "unknown sampler"),
        (["--target", "banana"], "unknown target"),
        (["--process", "vp", "--samplers", "sps"], "needs blocks x, m"),
    ],
)
def test_compare_errors(argv, msg, capsys):
    assert main(["compare", "--nfe", "5", "--n", "50", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_compare_rejects_bad_nfe_lists(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--nfe", "10,-2"])
    assert "positive integers" in capsys.readouterr().err
