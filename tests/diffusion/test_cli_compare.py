"""``splitsde compare``."""

import json
import math

import numpy as np
import pytest

import splitsde.diffusion as dm
from splitsde.apps.cli import main


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


def _json(capsys, argv):
    assert main(["compare", "--no-progress", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_rows_beyond_100x_the_floor_are_flagged_not_numbers(capsys):
    data = _json(
        capsys,
        ["--target", "ring-4", "--samplers", "em,oba", "--nfe", "6,12", "--n", "300"],
    )
    assert data["better"] == "lower" and data["metric"] == "sliced_w2"
    floor = data["floor"]
    assert floor > 0 and data["divergence_reference"] == floor
    flags = {}
    for r in data["rows"]:
        assert r["sliced_w2_floor"] == floor  # the same fresh data sets for every row
        if r["diverged"]:
            # a flag, not a bogus number: no metric value survives
            assert not {"sliced_w2", "energy", "mode_weight", "sliced_w2_se"} & set(r)
            assert "above 100 x" in r["diverged_reason"]
        else:
            assert math.isfinite(r["sliced_w2"]) and r["sliced_w2"] <= 100 * floor
        flags[(r["sampler"], r["nfe_budget"])] = r["diverged"]
    # naive OBA (two evaluations per step) blows up at 6 NFE on PSLD; EM does not
    assert flags[("oba", 6)] and not flags[("em", 6)] and not flags[("em", 12)]


def test_exact_table_reference_is_the_priors_kl(capsys):
    data = _json(
        capsys,
        ["--target", "gaussian-4", "--samplers", "em,oba,sscs", "--nfe", "6,30"],
    )
    assert data["exact"] and data["floor"] is None and data["metric"] == "kl"
    # KL(N(0, I) || N(mu, S)) of the prior's data block, in closed form
    tgt = dm.target("gaussian-4", seed=0)
    mu, S = tgt.mean.numpy(), tgt.cov.numpy()
    P = np.linalg.inv(S)
    ref = 0.5 * (np.trace(P) + mu @ P @ mu - 4 + np.linalg.slogdet(S)[1])
    assert data["divergence_reference"] == pytest.approx(ref, rel=1e-10)
    rows = {(r["sampler"], r["nfe_budget"]): r for r in data["rows"]}
    for r in rows.values():
        assert r["diverged"] == (not r.get("kl", math.inf) <= 100 * ref)
        assert r["diverged"] or math.isfinite(r["kl"])
    assert rows[("oba", 6)]["diverged"] and "kl" not in rows[("oba", 6)]
    assert not rows[("sscs", 30)]["diverged"] and rows[("sscs", 30)]["kl"] < ref


def test_table_states_direction_floor_and_divergence(capsys):
    argv = ["--target", "ring-4", "--samplers", "em,oba", "--nfe", "6", "--n", "300"]
    assert main(["compare", "--no-progress", *argv]) == 0
    out = capsys.readouterr().out
    assert "lower is better" in out and "finite-sample floor (data vs data)" in out
    # oba's 3 steps exceed its stability bound on the stationary linearisation: flagged "!"
    assert next(line for line in out.splitlines() if line.startswith("oba")).split()[1] == (
        "diverged*!"
    )
    assert "exceed the sampler's stability bound" in out
    assert main(["compare", "--no-progress", "--target", "gaussian-4", "--nfe", "6"]) == 0
    assert "exact law, no finite-sample floor" in capsys.readouterr().out


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    argv = ["--target", "ring-4", "--samplers", "em,sps", "--nfe", "6", "--n", "100"]
    assert main(["compare", "--progress", *argv]) == 0
    err = capsys.readouterr().err
    assert "compare:" in err and "run/s" in err and "sps NFE 6" in err  # job in the bar
    assert main(["compare", *argv]) == 0  # captured stderr is not a terminal: no bar
    assert capsys.readouterr().err == ""
