"""``splitsde digits`` shows progress bars for training and sampling when asked (or on a
terminal), and nothing on standard error otherwise."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("sklearn")

from splitsde.apps.cli import main
from splitsde.apps.examples import digits

SMALL = {"processes": ("vp",), "samplers": ("em", "sscs"), "nfe": (5,), "classifier_steps": 4}


def _bars(text: str) -> dict[str, str]:
    """The last state of every bar: description -> 'done/total'."""
    found = re.findall(r"([\w -]+):\s+\d+%\|[^|]*\|\s*(\d+/\d+)", text)
    return {desc.strip(): count for desc, count in found}


def test_training_and_sampling_show_bars_only_when_asked(tmp_path, capsys):
    config = digits.DigitsConfig.tiny(**SMALL)
    digits.run(config, None, cache=tmp_path, verbose=False, progress=True)
    err = capsys.readouterr().err
    bars = _bars(err)
    # one bar per training loop and one over the (process, sampler, budget) runs; each bar
    # starts at 0 of its total
    assert {"train classifier", "train vp", "sample"} <= set(bars), err
    for desc, total in [("train classifier", 4), ("train vp", 5), ("sample", 2)]:
        assert f"{desc}:   0%|" in err and f"| 0/{total} [" in err, (desc, err)
    # cached networks, stderr not a terminal: silent
    digits.run(config, None, cache=tmp_path, verbose=False)
    assert capsys.readouterr().err == ""
    # the command line: --progress forces the bars, --no-progress silences them
    args = ["digits", "--tiny", "--processes", "vp", "--samplers", "em", "--nfe", "5"]
    args += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cli")]
    assert main([*args, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*args, "--progress"]) == 0
    assert "sample:   0%|" in capsys.readouterr().err
