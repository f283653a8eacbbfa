"""User text is parsed, never evaluated, and parsing has a bounded cost.

Every place of the public API that accepts an expression is given code to run; each must refuse
it with a clear error of the library's own type, and the code must not have run (the payload
would create a file). Inputs built to make sympy compute for ever (``9**9**9**9``, huge
literals, deep nesting, long text) are run in a subprocess with a time limit, so a regression
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import sympy as sp
import torch

import splitsde as sd
import splitsde.diffusion as dm
from splitsde.compose.expressions import lower_expressions
from splitsde.symbolic.parse import MAX_DEPTH, MAX_EXPONENT, MAX_LENGTH, as_expression

x, q = sd.blocks("x q")


@pytest.fixture
def marker(tmp_path) -> Path:
    """A file that only the injected code would create."""
    return tmp_path / f"pwned-{uuid.uuid4().hex}"


def payloads(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"__import__('os').system('touch {m}')",
        f"__import__('pathlib').Path('{m}').touch()",
        f"(lambda: __import__('pathlib').Path('{m}').touch())()",
        f"eval(\"__import__('pathlib').Path('{m}').touch()\")",
        f"exec(\"open('{m}', 'w')\")",
        f"open('{m}', 'w')",
        "x.__class__.__base__.__subclasses__()",
        "().__class__.__bases__[0]",
        "Symbol('__import__')",
        "__builtins__",
        "x.evalf",
    ]


def _field_apply(text):
    F = sd.Field("F", [x])
    return F(text)


def _custom_solver(text):
    flow = sd.Flow({x: -x}, solver=sd.solvers.Custom({x: text}, weak_order=1))
    return flow.solver


def _process(**kw):
    base = {"drift": [[-1]], "diffusion": [1], "stationary_variance": [1]}
    base.update(kw)
    return dm.ForwardProcess("p", [x], values={}, **base)


def _lower(text):
    return lower_expressions([text], [x], {}, {}, [x])


#: entry point -> (callable of the text, expected error type)
ENTRY_POINTS = {
    "parse_expression": (lambda s: sd.parse_expression(s, [x]), sd.ExpressionError),
    "SympyPotential": (lambda s: sd.potentials.SympyPotential(s), sd.ExpressionError),
    "Field definition": (lambda s: sd.Field("F", [x], definition=s), sd.ExpressionError),
    "Field definition mapping": (
        lambda s: sd.Field("s", [x], outputs=["a"], definition={"a": s}),
        sd.ExpressionError,
    ),
    "Field application": (_field_apply, sd.ExpressionError),
    "Flow drift": (lambda s: sd.Flow({x: s}), TypeError),
    "Flow noise": (lambda s: sd.Flow({x: -x}, {x: s}), TypeError),
    "SDE drift": (
        lambda s: sd.SDE([x], {"A": sd.Flow({x: -x})}, drift={x: s}),
        (TypeError, sd.ExpressionError),
    ),
    "linear_drift": (lambda s: sd.linear_drift([[s]], [x]), sd.ExpressionError),
    "Custom solver": (_custom_solver, sd.ExpressionError),
    "ForwardProcess drift matrix": (lambda s: _process(drift=[[s]]), sd.ExpressionError),
    "ForwardProcess drift text": (lambda s: _process(drift=s), sd.ExpressionError),
    "ForwardProcess diffusion": (lambda s: _process(diffusion=[s]), sd.ExpressionError),
    "ForwardProcess stationary variance": (
        lambda s: _process(stationary_variance=[s]),
        sd.ExpressionError,
    ),
    "lower_expressions": (_lower, sd.ExpressionError),
    "word": (sd.word, sd.WordError),
    "Word": (sd.Word, sd.WordError),
    "preset": (sd.preset, sd.WordError),
    "integrator": (
        lambda s: sd.langevin.underdamped(sd.potentials.Harmonic(1.0)).integrator(s),
        sd.WordError,
    ),
    "diffusion process name": (dm.process, ValueError),
    "diffusion sampler name": (dm.sampler, ValueError),
    "diffusion target spec": (dm.target, ValueError),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_code_in_user_text_is_refused_and_never_runs(entry, marker):
    fn, error = ENTRY_POINTS[entry]
    for text in payloads(marker):
        with pytest.raises(error) as info:
            fn(text)
        assert str(info.value).strip(), f"{entry}: empty message for {text!r}"
        assert not marker.exists(), f"{entry} ran the code in {text!r}"


def test_strings_inside_containers_are_not_sympified(marker):
    text = f"__import__('pathlib').Path('{marker}').touch()"
    import numpy as np

    for bad in ([[text]], ([text],), np.array([[text]]), {"a": text}):
        with pytest.raises(sd.ExpressionError, match="got the string"):
            sd.linear_drift(bad, [x])
    assert not marker.exists()


def test_field_definition_text_uses_the_dependencies_as_namespace():
    F = sd.Field("F", [x], definition="-4*x**3 + 2*x")
    assert F.definition == {"F": -4 * x**3 + 2 * x}
    G = sd.Field("G", [x], time=True, definition="exp(-t)*x")
    assert G.definition == {"G": sp.exp(-sd.t) * x}
    with pytest.raises(sd.ExpressionError, match=r"unknown name 'q'; known: x, .*\n  -q\n   \^"):
        sd.Field("H", [x], definition="-q")


def test_expression_messages_point_at_the_offending_column():
    cases = {
        "x +\n  y ^ 2": (r"unexpected character '\^'; write powers as \*\*", "line 2:   y ^ 2"),
        "x\t+ x.real": ("attribute access is not allowed", "x       + x.real"),
        "2x": ("malformed number '2x'", "2x"),
        "x²": (r"'²' \(U\+00B2 SUPERSCRIPT TWO\) is not allowed", "x²"),
        "ｘ + 1": (r"U\+FF58 FULLWIDTH LATIN SMALL LETTER X", "ｘ + 1"),
        "sqrt(x, x)": ("takes 1 argument, got 2", "sqrt(x, x)"),
        "((x)": (r"expected '\)' to close the '\(' at column 1, found the end", "((x)"),
    }
    for text, (message, line) in cases.items():
        with pytest.raises(sd.ExpressionError, match=message) as info:
            sd.parse_expression(text, [x, sd.Block("y")])
        shown, pointer = str(info.value).split("\n")[-2:]
        assert shown == "  " + line
        col = pointer.index("^")
        # the caret sits under the offending character of the shown line
        expected = {
            "x +\n  y ^ 2": "^",
            "x\t+ x.real": ".",
            "2x": "x",
            "x²": "²",
            "ｘ + 1": "ｘ",
            "sqrt(x, x)": "(",
            "((x)": None,
        }[text]
        if expected is None:
            assert col == len(shown)  # just past the end
        else:
            # display columns: every character here is one column wide except the full-width x
            widths = [2 if c == "ｘ" else 1 for c in shown]
            starts = [sum(widths[:i]) for i in range(len(shown))]
            assert shown[starts.index(col)] == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2**3**2", 512),  # right-associative, as in Python
        ("-2**2", -4),
        ("2**-1", sp.Rational(1, 2)),
        ("1/3 + 1/6", sp.Rational(1, 2)),
        ("0.0", sp.Float(0)),
        ("1e308", sp.Float("1e308")),
        ("(1/2)**1000", sp.Rational(1, 2**1000)),
        ("sqrt(4)", 2),
        ("pi - pi", 0),
    ],
)
def test_arithmetic_follows_python(text, value):
    assert sd.parse_expression(text) == value


def test_expressions_that_are_not_real_or_not_finite_are_refused():
    for text, message in [
        ("1/0", "division by zero"),
        ("x/(x - x)", "division by zero"),
        ("0**-1", "division by zero"),
        ("x/0.0", "division by zero"),
        ("sqrt(-1)", "not real"),
        ("(-8)**(1/3)", "not real"),
    ]:
        with pytest.raises(sd.ExpressionError, match=message):
            sd.parse_expression(text, [x])


BOMBS = {
    "9**9**9**9": r"9\*\*387420489 is about 10\*\*3.7e\+08, outside the float64 range",
    "10**10**10": r"10\*\*10000000000 is about 10\*\*1e\+10",
    "(1/3)**(10**6)": r"\(1/3\)\*\*1000000 is about 10\*\*-4.77e\+05",
    "2.0**1e9": r"2\*\*1e\+09 is about",
    "1e999999999": "number 1e999999999 is outside the float64 range",
    "1" * 5000: r"number 11111111111111111111\.\.\. is outside the float64 range",
    "10**300 * 10**300": "the number 10000000000000000000...0000000000 .601 characters. is outside",
    "x**(10**9)": f"exponent 1000000000 is too large.*at most {MAX_EXPONENT}",
    "(x + t + 1)**100000": "exponent 100000 is too large",
    "exp(x)**1e300": "exponent 1e\\+300 is too large",
    "(" * 4000 + "x" + ")" * 4000: f"nested more than {MAX_DEPTH} levels deep",
    "-" * 5000 + "x": f"nested more than {MAX_DEPTH} levels deep",
    "x**" * 2000 + "x": f"nested more than {MAX_DEPTH} levels deep",
    "exp(" * 1500 + "x" + ")" * 1500: f"nested more than {MAX_DEPTH} levels deep",
    "x + " * 3000 + "x": f"characters is too long \\(at most {MAX_LENGTH}\\)",
}


def _run_with_time_limit(script: str, limit: float) -> dict:
    """Run ``script`` in a fresh interpreter; fail the test if it takes longer than ``limit``."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"parsing hostile input took longer than {limit} s (the parser hangs)")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_inputs_built_to_hang_are_refused_quickly():
    script = textwrap.dedent(
        f"""
        import json, time
        import splitsde as sd
        x = sd.Block("x")
        results = {{}}
        for text in {list(BOMBS)!r}:
            start = time.perf_counter()
            try:
                sd.parse_expression(text, [x, sd.t])
                results[text] = ["parsed", time.perf_counter() - start]
            except sd.ExpressionError as exc:
                results[text] = [str(exc), time.perf_counter() - start]
        print(json.dumps(results))
        """
    )
    # import ~5 s on a loaded machine; the inputs themselves take milliseconds
    results = _run_with_time_limit(script, 120)
    import re

    for text, message in BOMBS.items():
        got, seconds = results[text]
        assert re.search(message, got), (text[:40], got[:300])
        assert seconds < 2.0, (text[:40], seconds)


def test_random_text_either_parses_or_raises_expression_error():
    """Random arrangements of the grammar's pieces (and of some characters outside it) never
    escape as another exception type and never take long."""
    pieces = ["x", "t", "1", "9", "0", "2.5", "1e300", "**", "*", "/", "+", "-", "(", ")", ","]
    pieces += ["exp(", "sqrt(", "log(", "pi", "E", " ", ".", "_", "^", "'", "x²", "\t", "\n"]
    rng = random.Random(11)
    texts = ["".join(rng.choices(pieces, k=rng.randint(1, 40))) for _ in range(3000)]
    script = textwrap.dedent(
        f"""
        import json, time
        import sympy as sp
        import splitsde as sd
        x = sd.Block("x")
        worst, bad = 0.0, []
        for text in {texts!r}:
            start = time.perf_counter()
            try:
                e = sd.parse_expression(text, [x, sd.t])
                if not isinstance(e, sp.Expr) or e.has(sp.I, sp.zoo, sp.nan, sp.oo):
                    bad.append([text, str(e)])
            except sd.ExpressionError:
                pass
            except Exception as exc:
                bad.append([text, repr(exc)])
            worst = max(worst, time.perf_counter() - start)
        print(json.dumps({{"worst": worst, "bad": bad}}))
        """
    )
    results = _run_with_time_limit(script, 240)
    assert results["bad"] == []
    assert results["worst"] < 2.0


def test_as_expression_converts_numbers_and_refuses_other_objects():
    assert as_expression(2, "w") == 2 and as_expression(x + 1, "w") == x + 1
    assert as_expression("x + 1", "w", [x]) == x + 1
    with pytest.raises(sd.ExpressionError, match="w: got the string 'x'"):
        as_expression("x", "w")
    with pytest.raises(sd.ExpressionError, match="w: <object object"):
        as_expression(object(), "w")
    with pytest.raises(sd.ExpressionError, match=r"w: \[1\] is not a symbolic expression"):
        as_expression([1], "w")


def test_symbolic_tensors_parameters_still_work_after_routing():
    """The routed entry points keep accepting what they accepted before (numbers, sympy)."""
    F = sd.Field("F", [x], definition=-2 * x)
    assert F(x) == F.apply() and F(x + 1).args == (x + 1,)
    fn = lower_expressions([2 * x], [x], {}, {}, [x])
    assert torch.equal(fn([torch.ones(3)], 0.0)[0], torch.full((3,), 2.0))
    p = _process(drift=[[-sp.Rational(1, 2)]], diffusion=[1])
    assert p.drift[0, 0] == -sp.Rational(1, 2)
