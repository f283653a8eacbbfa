"""The ``splitsde`` command reports every user error in one line with a documented status.

Bad options are refused when they are parsed, with the valid range in the message; output
paths are probed before any computation; memory that cannot exist is refused before it is
allocated; library errors raised during a run become one line with status 1; only a genuine
bug keeps its traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import splitsde as sd
from splitsde.apps.cli import EXIT_STATUS, exit_status, main
from splitsde.apps.cli.common import SEED_MAX, writable_dir, writable_file


@pytest.fixture
def a_file(tmp_path) -> Path:
    """A regular file: paths *under* it cannot be created, even by root."""
    f = tmp_path / "plain.txt"
    f.write_text("x")
    return f


def _refused(argv: list[str], capsys) -> str:
    """Run ``argv``, expect status 2 and one error line without a traceback; return it."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse refuses an option
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1] if "argument" in err else err


SEED_RANGE = f"a seed is an integer from 0 to {SEED_MAX} \\(2\\*\\*63 - 1\\)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--seed", "-1"], f"argument --seed: -1 is out of range: {SEED_RANGE}"),
        (["sample", "--seed", str(2**64)], f"is out of range: {SEED_RANGE}"),
        (["sample", "--seed", "9" * 5000], "is not an integer"),
        (["sample", "--seed", "١٢"], r"'١٢' is not an integer \(ASCII digits only\)"),
        (["sample", "--mass", "1e-300"], r"--mass: 1e-300 is outside the range \[1e-06, 1e\+06\]"),
        (["sample", "--mass", "1e300"], r"--mass: 1e300 is outside the range \[1e-06, 1e\+06\]"),
        (["sample", "--omega", "1e200"], r"--omega: 1e200 is outside the range"),
        (["sample", "--kT", "1e-320"], r"--kT: 1e-320 is outside the range"),
        (["sample", "--kT", "nan"], r"--kT: nan is outside the range"),
        (["sample", "--kT", "inf"], r"--kT: inf is outside the range"),
        (["sample", "--gamma", "-1"], r"--gamma: -1 is outside the range \[1e-06, 1e\+06\] or 0"),
        (["sample", "--h", "0"], "--h: 0 must be positive and finite"),
        (["sample", "--dim", "0"], "--dim: 0 must be at least 1"),
        (["sample", "--walkers", "-3"], "--walkers: -3 must be at least 1"),
        (["verify", "BAOAB", "--dim", "0"], "--dim: 0 must be at least 1"),
        (["verify", "BAOAB", "--seed", "-2"], f"--seed: -2 is out of range: {SEED_RANGE}"),
        (["compare", "--seed", "-5"], f"--seed: -5 is out of range: {SEED_RANGE}"),
        (["compare", "--nfe", "0,10"], "give positive integers"),
        (["compare", "--nfe", "١٠"], r"'١٠' is not a comma-separated list of integers \(ASCII"),
        (["digits", "--threads", "0"], r"--threads: 0 is outside the range \[1, 4096\]"),
        (["digits", "--threads", "-1"], r"--threads: -1 is outside the range"),
        (["digits", "--train-steps", "0"], "--train-steps: 0 must be at least 1"),
        (["digits", "--samples", "0"], "--samples: 0 must be at least 1"),
        (["digits", "--seed", str(2**63)], "out of range"),
    ],
)
def test_bad_options_give_the_valid_range(argv, message, capsys):
    import re

    line = _refused(argv, capsys)
    assert re.search(message, line), line
    assert line.startswith(f"splitsde {argv[0]}: error: argument")


def test_unwritable_output_paths_are_refused_before_any_computation(
    tmp_path, a_file, capsys, monkeypatch
):
    import splitsde.analysis.certify as certify
    import splitsde.apps.demo as demo
    import splitsde.diffusion as dm

    def never(*args, **kwargs):
        raise AssertionError("the computation started before the output path was checked")

    monkeypatch.setattr(certify, "certificate", never)
    monkeypatch.setattr(dm, "compare", never)
    monkeypatch.setattr(demo, "run_demo", never)
    monkeypatch.setattr(sd, "integrate", never)
    under = str(a_file / "x.png")
    cases = [
        (["verify", "BAOAB", "--plot", under], f"cannot write {under}: {a_file} is not a folder"),
        (["verify", "BAOAB", "--plot", "/nonexistent-dir/x.png"], "folder /nonexistent-dir"),
        (["verify", "BAOAB", "--plot", str(tmp_path)], "is a folder, not a file"),
        (["verify", "BAOAB", "--plot", str(tmp_path / "x.xyz")], "cannot write a figure as .xyz"),
        (["compare", "--plot", under], "is not a folder"),
        (["sample", "--log", under], "is not a folder"),
        (["demo", "--out", str(a_file / "figs")], f"{a_file} is not a folder"),
        (["demo", "--out", "/proc/splitsde-figs"], "cannot write into folder /proc/splitsde-figs"),
        (["digits", "--out", str(a_file / "o")], "is not a folder"),
        (["digits", "--cache-dir", str(a_file / "c")], "is not a folder"),
    ]
    for argv, message in cases:
        line = _refused(argv, capsys)
        assert message in line, line


def test_path_probes_leave_nothing_behind(tmp_path):
    target = tmp_path / "fig.png"
    assert writable_file(str(target)) == str(target) and not target.exists()
    target.write_bytes(b"old")
    writable_file(str(target))
    assert target.read_bytes() == b"old"  # an existing file is opened, not truncated
    new = tmp_path / "a" / "b"
    assert writable_dir(str(new)) == str(new)
    assert not (tmp_path / "a").exists() and os.listdir(tmp_path) == ["fig.png"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sample", "--walkers", str(10**12)],
            r"10{12} walkers with 1 coordinate\(s\) each needs about .* GiB of memory, more "
            r"than the .* GiB available; use fewer --walkers",
        ),
        (
            ["sample", "--walkers", "1000000", "--dim", str(10**8)],
            r"needs about .* GiB of memory",
        ),
        (
            ["verify", "BAOAB", "--system", "linear", "--dim", str(10**6)],
            r"the exact analysis of --dim 1000000 needs about .* GiB of memory",
        ),
        (
            ["compare", "--target", "gaussian-100000"],
            r"--target gaussian-100000 with --n 2000 needs about .* GiB",
        ),
        (["compare", "--target", "ring-8", "--n", str(10**12)], r"needs about .* GiB"),
        (["sample", "--system", "muller-brown", "--dim", "3"], "muller-brown is 2-D"),
        (["compare", "--target", "gaussian-١٢"], "unknown target 'gaussian-١٢'; use gaussian-D"),
        (["compare", "--target", "ring-8; rm"], "unknown target"),
        (["verify", "BAOAB", "--dim", "8"], "--dim applies to --system linear, not harmonic"),
        (["sample", "--word", "BAOAß"], r"U\+00DF LATIN SMALL LETTER SHARP S"),
        (["verify", "B A ; O"], "unexpected character ';'\n  B A ; O\n      \\^"),
    ],
)
def test_impossible_runs_are_refused_in_one_line_before_allocating(argv, message, capsys):
    import re

    err = _refused(argv, capsys)
    assert err.startswith(f"splitsde {argv[0]}: error: "), err
    assert re.search(message, err), err


@pytest.mark.parametrize(
    ("raised", "status", "message"),
    [
        (sd.NonFiniteError("step 7: non-finite values in block q"), 1, "step 7: non-finite"),
        (sd.FieldError("field F raised ValueError"), 1, "field F raised"),
        (sd.CheckpointError("cannot write run.ckpt"), 1, "cannot write run.ckpt"),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 80000000000 bytes. Error code 12"
            ),
            1,
            "out of memory (can't allocate memory: you tried to allocate 80000000000 bytes); "
            "use fewer walkers",
        ),
        (MemoryError(), 1, "out of memory (MemoryError)"),
        (PermissionError(13, "Permission denied", "/data/out.png"), 1, "Permission denied: /da"),
        (sd.WordError("unknown letter 'X'"), 2, "unknown letter 'X'"),
        (sd.ExpressionError("unknown name 'y'"), 2, "unknown name 'y'"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_errors_during_a_run_map_to_the_documented_status(
    raised, status, message, capsys, monkeypatch
):
    import splitsde.apps.cli.sample as sample

    def fail(args):
        raise raised

    monkeypatch.setattr(sample, "run", fail)
    assert main(["sample"]) == status == exit_status(raised)
    err = capsys.readouterr().err
    assert err.startswith(f"splitsde sample: error: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert status in EXIT_STATUS.values()


def test_a_bug_keeps_its_traceback(monkeypatch):
    import splitsde.apps.cli.sample as sample

    def bug(args):
        return 1 / 0

    monkeypatch.setattr(sample, "run", bug)
    assert exit_status(ZeroDivisionError()) is None
    with pytest.raises(ZeroDivisionError):
        main(["sample"])


def test_command_line_prints_one_line_and_documents_exit_status(capsys):
    """The entry point end to end (one line on stderr, the status), and the table of statuses
    in --help."""
    run = subprocess.run(
        [sys.executable, "-m", "splitsde", "sample", "--seed", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("splitsde sample: error: argument --seed")
    for command in ([], ["verify"], ["sample"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        help_text = capsys.readouterr().out
        assert "exit status:" in help_text
        for status in EXIT_STATUS.values():
            assert f"\n  {status:<4} " in help_text
