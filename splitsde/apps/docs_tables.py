"""Markdown generated from the library's declarations (used by the docs build hook).

Every function returns a Markdown string; the docs insert it where a page says
``<!-- generated: function_name -->``.
"""

from __future__ import annotations

import sympy

__all__ = [
    "diffusers_peers_tables",
    "diffusion_defaults_tables",
    "diffusion_quality_tables",
    "langevin_nfe_table",
    "method_table",
    "ode_method_table",
    "optimized_schedules_tables",
    "presets_table",
    "solver_gallery",
]


def presets_table() -> str:
    from splitsde.compose.presets import PRESETS

    rows = [
        "| preset | word | weak order | invariant measure | reference |",
        "|---|---|---|---|---|",
    ]
    for p in PRESETS.values():
        name = p.name + (f" (alias {', '.join(p.aliases)})" if p.aliases else "")
        rows.append(f"| {name} | `{p.word}` | {p.weak_order} | {p.invariant} | {p.reference} |")
    return "\n".join(rows)


def _gallery_flows() -> list[tuple[str, object]]:
    from splitsde.symbolic.field import Field
    from splitsde.symbolic.flow import Flow, linear_drift
    from splitsde.symbolic.symbols import blocks, parameters, t

    q, p, x, m = blocks("q p x m")
    g, kT, M = parameters("gamma kT M", positive=True)
    b0, b1, G, nu, Mi = parameters("beta0 beta1 Gamma nu Minv", positive=True)
    beta = b0 + (b1 - b0) * t
    F = Field("F", [q])
    S = Field("s", [x], time=True)
    return [
        ("Kick (shear)", Flow({p: F()})),
        ("Drift (shear)", Flow({q: p / M})),
        ("Ornstein-Uhlenbeck", Flow({p: -g * p}, {p: sympy.sqrt(2 * g * kT * M)})),
        ("VP forward process, linear beta(t)", Flow({x: -beta * x / 2}, {x: sympy.sqrt(beta)})),
        (
            "PSLD forward process (coupled, common clock)",
            Flow(
                linear_drift([[-beta * G / 2, beta * Mi / 2], [-beta / 2, -beta * nu / 2]], [x, m]),
                {x: sympy.sqrt(G * beta), m: sympy.sqrt(nu * beta / Mi)},
            ),
        ),
        ("Noise without a closed-form variance", Flow({x: -x}, {x: sympy.exp(-(t**2))})),
        ("Overdamped drift (nonlinear)", Flow({q: F()}, {q: sympy.sqrt(2 * kT)})),
        ("Friction plus a field (linear part)", Flow({p: -g * p + F()})),
        ("Time-dependent score in a shear", Flow({m: S()})),
    ]


def solver_gallery() -> str:
    out = []
    for title, flow in _gallery_flows():
        s = flow.solver
        eqs = "; ".join(f"`{e.lhs} = {e.rhs}`" for e in flow.equations())
        out.append(f"### {title}\n\nFlow: {eqs}\n\n```text\n{s.describe()}\n```\n")
    return "\n".join(out)


def langevin_nfe_table() -> str:
    from splitsde.langevin import potentials, underdamped

    system = underdamped(potentials.Harmonic(1.0))
    rows = ["| word | symmetric | weak order | field evaluations per step |", "|---|---|---|---|"]
    for w in ("BAOAB", "ABOBA", "OBABO", "OABAO", "BAOA", "OBA", "BAO", "ABO"):
        integ = system.integrator(w)
        rows.append(
            f"| `{w}` | {integ.word.is_symmetric} | {integ.weak_order} | "
            f"{integ.evaluations_per_step} |"
        )
    return "\n".join(rows)


def method_table() -> str:
    """Every registered method (presets, solver strategies, torchdiffeq solvers, samplers)
    with its declared weak order, invariant-measure behaviour, field evaluations per step (from
    the compiled program, or measured when adaptive), exact sub-flows and reference."""
    import importlib

    from splitsde.base.methods import registered_methods

    # describers register on import: presets (on Langevin), solver strategies, ODE solvers
    for module in (
        "splitsde.langevin.dynamics",
        "splitsde.runtime.method_rows",
        "splitsde.interop.torchdiffeq",
        "splitsde.diffusion",
    ):
        importlib.import_module(module)
    rows = [
        "| method | kind | weak order | invariant measure | field evaluations per step "
        "(per slice for a solver) | exact sub-flows | reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in registered_methods():
        cells = [
            m.name,
            m.kind,
            m.weak_order,
            m.invariant,
            m.evaluations,
            m.exact_subflows,
            m.reference,
        ]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def ode_method_table() -> str:
    """The torchdiffeq methods :class:`~splitsde.interop.torchdiffeq.ODESolver` accepts."""
    from splitsde.interop.torchdiffeq import ODE_METHODS

    rows = [
        "| method | order | drift evaluations per internal step | reference |",
        "|---|---|---|---|",
    ]
    for m in ODE_METHODS.values():
        cost = "adaptive (measured)" if m.adaptive else str(m.stages)
        rows.append(f"| `{m.name}` | {m.order} | {cost} | {m.reference} |")
    return "\n".join(rows)


def _fmt(v: float | None) -> str:
    if v is None or v != v or v in (float("inf"), float("-inf")):
        return "diverged"
    return f"{v:.3g}"


def diffusion_quality_tables() -> str:
    """Every table of the committed full-size run of ``benchmarks/diffusion_quality.py``
    (``benchmarks/results/diffusion_quality/diffusion_quality.json``), one per process and
    target, so the docs show exactly what the JSON holds. Exact Gaussian targets: KL of the
    exact output law; mixtures: sliced W2 ± its standard error over batches, then the
    mode-weight error ± SE."""
    import json
    from pathlib import Path

    path = (
        Path(__file__).resolve().parents[2]
        / "benchmarks/results/diffusion_quality/diffusion_quality.json"
    )
    data = json.loads(path.read_text())
    out = []
    for block in data["quality"]:
        rows = block["rows"]
        nfes = sorted({r["nfe_budget"] for r in rows})
        names = list(dict.fromkeys(r["sampler"] for r in rows))
        cell = {(r["sampler"], r["nfe_budget"]): r for r in rows}
        exact = block["metric"] == "kl"
        metrics = [("kl", "exact KL")] if exact else [
            ("sliced_w2", "sliced W2"), ("mode_weight", "mode-weight error")
        ]  # fmt: skip
        for key, label in metrics:
            head = f"**{block['process']}, {block['target_name']}: {label}**"
            if not exact:
                floor = next(r[f"{key}_floor"] for r in rows if f"{key}_floor" in r)
                head += f" (floor, data vs data: {_fmt(floor)})"
            out += [head, "", "| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |"]
            out.append("|---|" + "---:|" * len(nfes))
            for name in names:
                cells = []
                for n in nfes:
                    r = cell.get((name, n))
                    if r is None:
                        cells.append("")
                    elif r.get("error"):
                        cells.append(r.get("error_short", "error"))
                    else:
                        txt = _fmt(r.get(key))
                        se = r.get(f"{key}_se")
                        star = "\\*" if r.get("nfe") not in (None, n) else ""
                        cells.append(txt + (f" ± {se:.1g}" if se is not None else "") + star)
                out.append(f"| {name} | " + " | ".join(cells) + " |")
            out.append("")
    out.append("\\* measured NFE below the budget: the naive words cost two evaluations per step.")
    return "\n".join(out)


def diffusers_peers_tables() -> str:
    """The tables of the committed run of ``benchmarks/diffusers_peers.py``
    (``benchmarks/results/diffusers_peers.json``): splitsde samplers and diffusers schedulers
    on VP with the exact score, one table per target, NFE across."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks/results/diffusers_peers.json"
    data = json.loads(path.read_text())
    out = []
    for block in data["blocks"]:
        rows = block["rows"]
        m = block["metric"]
        nfes = sorted({r["nfe_budget"] for r in rows})
        cell = {(r["library"], r["sampler"], r["nfe_budget"]): r for r in rows}
        names = list(dict.fromkeys((r["library"], r["sampler"]) for r in rows))
        label = "exact KL to the data" if m == "kl" else "sliced W2 to fresh data (± SE)"
        head = f"**{block['target_name']}: {label}, lower is better**"
        if block.get("floor") is not None:
            head += f" (finite-sample floor, data vs data: {_fmt(block['floor'])})"
        out += [head, "", "| library | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |"]
        out.append("|---|---|" + "---:|" * len(nfes))
        for lib, name in names:
            cells = []
            for n in nfes:
                r = cell.get((lib, name, n))
                if r is None:
                    cells.append("")
                elif r.get("error"):
                    cells.append(r.get("error_short", "error"))
                elif r.get("diverged"):
                    cells.append("diverged")
                else:
                    se = r.get(f"{m}_se")
                    star = "\\*" if r.get("nfe") not in (None, n) else ""
                    cells.append(_fmt(r.get(m)) + (f" ± {se:.1g}" if se is not None else "") + star)
            shown = f"`{name}`" if lib == "splitsde" else name
            out.append(f"| {lib} | {shown} | " + " | ".join(cells) + " |")
        out.append("")
    versions = data.get("versions", {})
    out.append(
        "\\* measured NFE differs from the budget (a splitsde sampler whose steps cost several "
        "evaluations runs the most steps that fit). Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "."
    )
    return "\n".join(out)


def diffusion_defaults_tables() -> str:
    """The committed run of ``benchmarks/diffusion_defaults.py``
    (``benchmarks/results/diffusion_defaults.json``): per process, every sampler's recommended
    grid (its optimized schedule where that won) and its exact KL against the uniform grid at
    each NFE budget; the stability bounds :math:`h^*`; the PSLD ring run against its
    finite-sample floor."""
    import json
    from pathlib import Path

    from splitsde.diffusion.defaults import SELECTION, _lam_key

    path = Path(__file__).resolve().parents[2] / "benchmarks/results/diffusion_defaults.json"
    data = json.loads(path.read_text())
    rows, selection = data["rows"], data["selection"]
    out = []
    for fam, pnames in SELECTION["processes"].items():
        for pname in pnames:
            sub = [r for r in rows if r["process"] == pname]
            if not sub:
                continue
            tname = sub[0]["target"]
            nfes = sorted({r["nfe_budget"] for r in sub})
            out += [
                f"**{pname}, {tname}: exact KL, recommended grid / uniform grid**",
                "",
                "| sampler | recommended grid | λ | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                "|---|---|---|" + "---:|" * len(nfes),
            ]
            for name, sel in selection.items():
                g = sel["grids"].get(fam)
                if g is None:
                    continue
                if sel.get("optimized", {}).get(pname, {}).get("wins"):
                    g = "optimized"
                lk = None if sel["lam"] is None else _lam_key(sel["lam"])
                cell = {
                    (r["grid"], r["nfe_budget"]): r.get("kl")
                    for r in sub
                    if r["sampler"] == name and (r["lam"] is None or _lam_key(r["lam"]) == lk)
                }
                cells = [
                    f"{_fmt(cell.get((g, n)))} / {_fmt(cell.get(('uniform', n)))}" for n in nfes
                ]
                lam = "" if lk is None else lk
                out.append(f"| {name} | {g} | {lam} | " + " | ".join(cells) + " |")
            out.append("")
    stab = data.get("stability", [])
    if stab:
        procs = list(dict.fromkeys(b["process"] for b in stab))
        names = list(dict.fromkeys(b["sampler"] for b in stab))
        cell = {(b["sampler"], b["process"]): b for b in stab}
        out += [
            "**Stability bound h\\* on the stationary linearisation** (— : stable on the whole "
            "range; n/a: not computed)",
            "",
            "| sampler | " + " | ".join(procs) + " |",
            "|---|" + "---:|" * len(procs),
        ]
        for name in names:
            cells = []
            for p in procs:
                b = cell.get((name, p))
                if b is None:
                    cells.append("")
                elif b["bound"] is not None:
                    cells.append(f"{b['bound']:.3g}")
                else:
                    cells.append("n/a" if b["method"] == "not computed" else "—")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    ring = data.get("ring", [])
    if ring:
        nfes = sorted({r["nfe_budget"] for r in ring})
        floor = next((r["sliced_w2_floor"] for r in ring if "sliced_w2_floor" in r), None)
        out += [
            f"**psld-cifar10, ring-8: sliced W2 on the recommended grid** (floor, data vs data: "
            f"{_fmt(floor)})",
            "",
            "| sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
            "|---|---|" + "---:|" * len(nfes),
        ]
        cell = {(r["sampler"], r["nfe_budget"]): r for r in ring}
        for name in dict.fromkeys(r["sampler"] for r in ring):
            cells = []
            for n in nfes:
                r = cell.get((name, n), {})
                if r.get("diverged") or r.get("error"):
                    cells.append("diverged")
                else:
                    cells.append(f"{_fmt(r.get('sliced_w2'))} ± {r.get('sliced_w2_se', 0):.1g}")
            grid = next(r["grid"] for r in ring if r["sampler"] == name)
            out.append(f"| {name} | {grid} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def optimized_schedules_tables() -> str:
    """The committed run of ``benchmarks/optimized_schedules.py``
    (``benchmarks/results/optimized_schedules.json``): per sampler and process, the exact KL on
    the 64-D evaluation Gaussian (not the training data) of the optimized schedule against the
    named grids at each NFE (``*``: interpolated from a stored schedule); the KL on the other
    evaluation Gaussians at the stored NFEs; the sensitivity to perturbing the schedule."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks/results/optimized_schedules.json"
    data = json.loads(path.read_text())
    ev = data["evaluation"]
    out = []
    pairs = list(dict.fromkeys((r["sampler"], r["process"]) for r in ev))
    nfes = sorted({r["nfe"] for r in ev})
    grids = list(dict.fromkeys(r["grid"] for r in ev))
    grids = ["optimized"] + [g for g in grids if g != "optimized"]
    main = "gaussian-64"
    for name, proc in pairs:
        cell = {(r["grid"], r["nfe"]): r for r in ev
                if (r["sampler"], r["process"], r["data"]) == (name, proc, main)}  # fmt: skip
        out += [
            f"**{name} on {proc}, {main}: exact KL by grid** (`*`: interpolated schedule)",
            "",
            "| grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
            "|---|" + "---:|" * len(nfes),
        ]
        for g in grids:
            cells = []
            for n in nfes:
                r = cell.get((g, n))
                mark = "*" if r and r.get("interpolated") else ""
                cells.append(_fmt(r["kl"] if r else None) + mark)
            out.append(f"| {g} | " + " | ".join(cells) + " |")
        out.append("")
    stored = {(s["sampler"], s["process"], s["steps"] + 1) for s in data["searches"]}
    others = [d for d in dict.fromkeys(r["data"] for r in ev) if d != main]
    if others:
        out += [
            "**Other evaluation Gaussians, at the stored NFEs: optimized / best named grid**",
            "",
            "| sampler | process | NFE | " + " | ".join(others) + " |",
            "|---|---|---:|" + "---:|" * len(others),
        ]
        for name, proc, nfe in sorted(stored):
            cells = []
            for d in others:
                key = (name, proc, d, nfe)
                kl = {
                    r["grid"]: r["kl"]
                    for r in ev
                    if (r["sampler"], r["process"], r["data"], r["nfe"]) == key
                }
                named = [v for g, v in kl.items() if g != "optimized" and v == v]
                cells.append(f"{_fmt(kl.get('optimized'))} / {_fmt(min(named) if named else None)}")
            out.append(f"| {name} | {proc} | {nfe} | " + " | ".join(cells) + " |")
        out.append("")
    sens = data.get("sensitivity", [])
    if sens:
        amps = sorted({r["relative_perturbation"] for r in sens})
        out += [
            f"**Sensitivity: {main} KL after multiplying each log-time step by 1 + σξ, ξ standard "
            "normal, rescaled to keep the end points (median and largest of six draws)**",
            "",
            "| sampler | process | NFE | unperturbed | "
            + " | ".join(f"σ = {a:.0%}" for a in amps)
            + " |",
            "|---|---|---:|---:|" + "---:|" * len(amps),
        ]
        for name, proc, nfe in sorted(stored):
            key = (name, proc, main, nfe, "optimized")
            base = next(
                (
                    r["kl"]
                    for r in ev
                    if (r["sampler"], r["process"], r["data"], r["nfe"], r["grid"]) == key
                ),
                None,
            )
            cells = []
            for a in amps:
                (r,) = [r for r in sens if (r["sampler"], r["process"], r["steps"] + 1,
                        r["relative_perturbation"]) == (name, proc, nfe, a)]  # fmt: skip
                kls = sorted(r["kl"])
                mid = len(kls) // 2
                median = kls[mid] if len(kls) % 2 else 0.5 * (kls[mid - 1] + kls[mid])
                cells.append(f"{_fmt(median)} / {_fmt(kls[-1])}")
            out.append(f"| {name} | {proc} | {nfe} | {_fmt(base)} | " + " | ".join(cells) + " |")
    return "\n".join(out)
