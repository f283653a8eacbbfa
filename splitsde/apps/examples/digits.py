r"""Diffusion samplers on real data: scikit-learn's 8x8 digits.

The pipeline behind ``splitsde digits`` (also ``python -m splitsde.apps.examples.digits``):

1. **Data**: the 1,797 8x8 digits shipped with scikit-learn (no download), pixels
   :math:`0..16` scaled to :math:`[-1, 1]`, split into a training part and a held-out part.
2. **Score networks**: one :class:`~splitsde.apps.examples.networks.ScoreMLP` per forward process
   (VP on :math:`x`; PSLD on the augmented state :math:`(x, m)`, blocks concatenated), trained
   by denoising score matching in the ε-parametrisation: with :math:`(a_t, S_t = L_t L_t^\top)`
   the library's perturbation kernel :meth:`~splitsde.diffusion.ForwardProcess.data_kernel`,

   .. math:: z_t = a_t \otimes x_0 + L_t\,\varepsilon, \qquad
       \mathcal L = E_{t, x_0, \varepsilon}\,\lVert \varepsilon_\theta(z_t, t) - \varepsilon
       \rVert^2,

   :math:`t` uniform on :math:`[\epsilon, T]` (Ho, Jain & Abbeel, NeurIPS 2020; Song et al.,
   ICLR 2021; Pandey & Mandt, ICCV 2023 for PSLD). The kernel is evaluated once on a
   stratified pool of training times (``time_pool``), not per batch: the PSLD kernel goes
   through a Van Loan integral per time. Weights are the exponential moving average of the
   iterates, cached in the user cache (:mod:`splitsde.apps.examples.cache`).
3. **Classifier**: a small MLP (:class:`~splitsde.apps.examples.networks.DigitClassifier`) trained
   on the same training part; its penultimate layer is the feature space of the Fréchet
   distance (:mod:`splitsde.apps.examples.frechet`).
4. **Comparison**: every requested sampler on every process where it applies, at every NFE
   budget, through :func:`splitsde.diffusion.sample` with the network wrapped by
   :class:`~splitsde.diffusion.ScoreModel`. The generated samples (clipped to
   :math:`[-1, 1]`, as images are) are compared with the training part by the Fréchet
   distance; the held-out part against the training part, at the same sample count, is the
   floor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitsde.apps.examples.cache import cache_dir, check_writable, load_or_train
from splitsde.apps.examples.frechet import feature_statistics, frechet_distance
from splitsde.apps.examples.networks import DigitClassifier, ScoreMLP
from splitsde.base.optional import require
from splitsde.base.progress import progress_bar

__all__ = [
    "DigitsConfig",
    "DigitsData",
    "DigitsResult",
    "add_arguments",
    "compare_samplers",
    "config_from_args",
    "kernel_pool",
    "load_digits",
    "main",
    "perturb",
    "run",
    "score_network",
    "train_classifier",
    "train_score_network",
]

#: Bumped whenever training code changes what a configuration produces (invalidates caches).
TRAINING_VERSION = 1
SIDE = 8  # image side
DIM = SIDE * SIDE


@dataclass(frozen=True)
class DigitsConfig:
    """Everything that defines a run. The training fields form the cache keys.

    ``samples=None`` generates as many samples as the held-out part has, so that the
    real-vs-real floor is measured at the same sample count.
    """

    processes: tuple[str, ...] = ("vp", "psld-cifar10")
    samplers: tuple[str, ...] = ("em", "sscs", "sps", "ddim", "deis-tab3", "ipndm")
    nfe: tuple[int, ...] = (10, 20, 50, 100, 200)
    grid: str = "uniform"
    samples: int | None = None
    held_out: float = 0.3
    seed: int = 0
    # score networks
    train_steps: int = 10_000
    batch_size: int = 256
    width: int = 384
    depth: int = 3
    lr: float = 1e-3
    ema: float = 0.999
    time_pool: int = 4000
    # classifier
    classifier_steps: int = 2000
    classifier_width: int = 256
    features: int = 64
    # bootstrap resamples of the generated features for the standard error of the distance
    bootstrap: int = 20

    def __post_init__(self) -> None:
        positive = (
            "train_steps", "batch_size", "width", "depth", "time_pool", "classifier_steps",
            "classifier_width", "features",
        )  # fmt: skip
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out must lie in (0, 1), got {self.held_out}")
        if self.samples is not None and self.samples < 2:
            raise ValueError(f"samples must be at least 2, got {self.samples}")
        if not (self.lr > 0 and 0 <= self.ema < 1):
            raise ValueError(f"need lr > 0 and 0 <= ema < 1, got {self.lr}, {self.ema}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be non-negative, got {self.bootstrap}")
        if not self.processes or not self.samplers or not self.nfe:
            raise ValueError("give at least one process, one sampler and one NFE budget")
        if any(n < 1 for n in self.nfe):
            raise ValueError(f"NFE budgets must be positive, got {self.nfe}")
        check_sampler_names(self.samplers)  # before any training starts

    @classmethod
    def tiny(cls, **changes: Any) -> DigitsConfig:
        """A seconds-long configuration (tests, trying the pipeline out)."""
        base = cls(
            samplers=("em", "sscs"),
            nfe=(5, 10),
            samples=40,
            train_steps=5,
            batch_size=32,
            width=32,
            depth=1,
            time_pool=32,
            classifier_steps=20,
            classifier_width=32,
            features=8,
            bootstrap=3,
        )
        return replace(base, **changes)

    def score_training(self, process: Any) -> dict[str, Any]:
        """The cache key material of a score network for ``process``."""
        return {
            "kind": "score",
            "version": TRAINING_VERSION,
            "process": process.name,
            "process_values": process.values,
            "process_T": process.T,
            "process_eps": process.eps,
            "process_initial_variance": list(process.initial_variance),
            "parametrisation": "eps",
            "held_out": self.held_out,
            "seed": self.seed,
            "train_steps": self.train_steps,
            "batch_size": self.batch_size,
            "width": self.width,
            "depth": self.depth,
            "lr": self.lr,
            "ema": self.ema,
            "time_pool": self.time_pool,
        }

    def classifier_training(self) -> dict[str, Any]:
        """The cache key material of the classifier."""
        return {
            "kind": "classifier",
            "version": TRAINING_VERSION,
            "held_out": self.held_out,
            "seed": self.seed,
            "steps": self.classifier_steps,
            "width": self.classifier_width,
            "features": self.features,
        }


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DigitsData:
    """The digits in :math:`[-1, 1]`, flattened to 64 pixels, split by a seeded permutation."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits(held_out: float = 0.3, seed: int = 0) -> DigitsData:
    """scikit-learn's 8x8 digits scaled to :math:`[-1, 1]` (``x / 8 - 1``), split into a
    training part and a held-out fraction ``held_out``."""
    datasets = require("sklearn.datasets", extra="examples", feature="the digits example")
    data = datasets.load_digits()
    x = torch.tensor(data.data / 8.0 - 1.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(held_out * len(x))
    test, train = perm[:n_test], perm[n_test:]
    return DigitsData(x[train], y[train], x[test], y[test])


# ---------------------------------------------------------------------------------------------
# Score networks
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded_float32(seed: int) -> Iterator[None]:
    """Seeded float32 network initialisation that leaves the global RNG and default dtype as
    they were (the same weights whatever the caller's settings)."""
    old = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(torch.float32)
        try:
            yield
        finally:
            torch.set_default_dtype(old)


def kernel_pool(
    process: Any, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``n`` stratified training times on :math:`[\epsilon, T]` and the kernel at each:
    ``(t (n,), a (n, blocks), L (n, blocks, blocks))`` from the process's own
    :meth:`~splitsde.diffusion.ForwardProcess.data_kernel` (float64, cast to float32)."""
    u = (
        torch.arange(n, dtype=torch.float64)
        + torch.rand(n, generator=generator, dtype=torch.float64)
    ) / n
    t = process.eps + (process.T - process.eps) * u.numpy()
    a, S = process.data_kernel(t)
    L = np.linalg.cholesky(S)  # the same factor as ScoreModel's eps parametrisation
    as32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return as32(t), as32(a), as32(L)


def perturb(
    x0: torch.Tensor, a: torch.Tensor, L: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    r""":math:`z = a \otimes x_0 + L\,\varepsilon` per sample: ``x0 (B, d)``, ``a (B, n)``,
    ``L (B, n, n)``, ``noise (B, n, d)``; returns the blocks concatenated, ``(B, n d)``."""
    z = a[:, :, None] * x0[:, None, :] + torch.einsum("kbc,kcd->kbd", L, noise)
    return z.reshape(z.shape[0], -1)


def train_score_network(
    net: ScoreMLP,
    process: Any,
    x: torch.Tensor,
    config: DigitsConfig,
    *,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``net`` in place by ε-prediction on the data ``x`` (``(N, 64)``); on return it
    holds the exponential moving average of the iterates. Returns a small report.

    ``progress`` shows a bar over the training steps with the smoothed loss (default: on a
    terminal; see :func:`splitsde.base.progress.progress_bar`)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    blocks = len(process.block_names)
    gen = torch.Generator().manual_seed(config.seed + 101)
    t_pool, a_pool, L_pool = kernel_pool(process, config.time_pool, gen)
    started = time.perf_counter()
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, config.lr, total_steps=config.train_steps, pct_start=0.05
    )
    running, report_every = 0.0, max(1, config.train_steps // 10)
    bar = progress_bar(config.train_steps, f"train {process.name}", progress, unit="step")
    if bar is not None and log is not None:
        log = bar.write  # log lines above the bar, not through it
    net.train()
    for step in range(config.train_steps):
        i = torch.randint(len(x), (config.batch_size,), generator=gen)
        j = torch.randint(config.time_pool, (config.batch_size,), generator=gen)
        noise = torch.randn(config.batch_size, blocks, x.shape[1], generator=gen, dtype=x.dtype)
        z = perturb(x[i], a_pool[j], L_pool[j], noise)
        loss = (net(z, t_pool[j]) - noise.reshape(config.batch_size, -1)).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(net)
        running = 0.98 * running + 0.02 * loss.item()
        if bar is not None:
            bar.update(1)
        if (step + 1) % report_every == 0:
            smoothed = running / (1 - 0.98 ** (step + 1))
            if bar is not None:
                bar.set_postfix(loss=f"{smoothed:.4f}", refresh=False)
            if log is not None:
                log(f"    step {step + 1:>6}/{config.train_steps}  loss {smoothed:.4f}")
    if bar is not None:
        bar.close()
    net.load_state_dict(ema.module.state_dict())
    net.eval()
    return {
        "seconds": time.perf_counter() - started,
        "final_loss": running / (1 - 0.98**config.train_steps),
    }


def score_network(
    process: Any,
    data: DigitsData,
    config: DigitsConfig,
    directory: Path,
    *,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> tuple[ScoreMLP, dict[str, Any]]:
    """The trained ε-network of ``process``: from the cache, or trained (seeded) and cached."""
    dim = DIM * len(process.block_names)

    def build() -> ScoreMLP:
        with _seeded_float32(config.seed + 11):
            return ScoreMLP(dim, config.width, config.depth)

    def train(net: torch.nn.Module) -> dict[str, Any]:
        if log is not None:
            log(f"  training the {process.name} score network ({config.train_steps} steps)")
        return train_score_network(
            net, process, data.train_x, config, log=log, progress=progress
        )

    net, info = load_or_train(process.name, config.score_training(process), build, train, directory)
    net.eval()
    return net, info  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Classifier
# ---------------------------------------------------------------------------------------------
def train_classifier(
    data: DigitsData, config: DigitsConfig, directory: Path, *, progress: bool | None = None
) -> tuple[DigitClassifier, dict[str, Any]]:
    """The digit classifier (cached like the score networks) and its held-out accuracy;
    ``progress`` as for :func:`train_score_network`."""

    def build() -> DigitClassifier:
        with _seeded_float32(config.seed + 23):
            return DigitClassifier(DIM, config.classifier_width, config.features)

    def train(clf: torch.nn.Module) -> dict[str, Any]:
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(config.seed + 29)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3, weight_decay=1e-4)
        clf.train()
        bar = progress_bar(config.classifier_steps, "train classifier", progress, unit="step")
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG
            torch.manual_seed(config.seed + 31)
            for _ in range(config.classifier_steps):
                i = torch.randint(len(data.train_x), (128,), generator=gen)
                loss = torch.nn.functional.cross_entropy(clf(data.train_x[i]), data.train_y[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        clf.eval()
        return {"seconds": time.perf_counter() - started}

    clf, info = load_or_train("classifier", config.classifier_training(), build, train, directory)
    clf.eval()
    with torch.no_grad():
        info["accuracy"] = float((clf(data.test_x).argmax(1) == data.test_y).float().mean())
    return clf, info  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------
@dataclass
class DigitsResult:
    """What :func:`run` measured (also written as JSON)."""

    config: DigitsConfig
    floor: dict[str, Any]
    copy: dict[str, Any]
    classifier: dict[str, Any]
    training: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def table(self, metric: str = "frechet") -> str:
        """One block per process: samplers down, NFE budgets across, ``metric`` in the cells
        (``"frechet"`` with its bootstrap standard deviation, ``"class_tv"`` or
        ``"nearest_train"``), headed by the same metric of the two real-data references."""
        if metric not in _METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(_METRICS)}")
        nfes = sorted({r["nfe_budget"] for r in self.rows})
        width = 15
        n = self.rows[0]["samples"] if self.rows else "-"
        lines = [
            f"{_METRICS[metric]} ({n} samples, {self.config.grid} grid); real-vs-real floor "
            f"(held-out digits): "
            f"{_cell(self.floor, metric)}, training digits themselves: "
            f"{_cell(self.copy, metric)}",
        ]
        for proc in dict.fromkeys(r["process"] for r in self.rows):
            rows = [r for r in self.rows if r["process"] == proc]
            lines.append(f"{proc:14}" + "".join(f"{'NFE ' + str(k):>{width}}" for k in nfes))
            cell = {(r["sampler"], r["nfe_budget"]): r for r in rows}
            for name in dict.fromkeys(r["sampler"] for r in rows):
                line = f"  {name:12}"
                for k in nfes:
                    line += f"{_cell(cell.get((name, k)), metric):>{width}}"
                lines.append(line)
        if any(r.get("nfe") not in (None, r["nfe_budget"]) for r in self.rows):
            lines.append("* measured NFE below the budget (steps cost more than one evaluation)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "floor": self.floor,
            "copy": self.copy,
            "classifier": self.classifier,
            "training": self.training,
            "rows": self.rows,
            "notes": self.notes,
            "files": self.files,
        }


_METRICS = {
    "frechet": "Fréchet distance to the training digits in the classifier's feature space",
    "class_tv": "Total variation of the predicted label frequencies from the training labels",
    "nearest_train": "Mean pixel distance to the nearest training digit",
}


def _cell(r: dict[str, Any] | None, metric: str = "frechet") -> str:
    if r is None:
        return "-"
    if r.get("error"):
        return r["error_short"]
    v = r.get(metric)
    star = "*" if r.get("nfe") not in (None, r.get("nfe_budget")) else ""
    if v is None or not math.isfinite(v):
        return "diverged" + star
    se = r.get(f"{metric}_se")
    return (f"{v:.3g}" if se is None else f"{v:.3g}±{se:.1g}") + star


class Measure:
    r"""Quality of a set of generated digits against the training digits.

    * ``frechet``: the Fréchet distance in the classifier's feature space to the statistics
      of all training digits, with ``frechet_se``, the standard deviation over ``bootstrap``
      resamples of the generated set (the reference statistics held fixed);
    * ``class_tv``: total variation :math:`\tfrac12\sum_k|\hat p_k - p_k|` between the
      classifier's predicted labels and the training labels (mode coverage);
    * ``nearest_train``: the mean pixel-space distance of a sample to its nearest training
      digit (small values flag copies of the training set).
    """

    def __init__(self, clf: DigitClassifier, train_x: torch.Tensor, train_y: torch.Tensor):
        self.clf = clf
        self.train_x = train_x
        with torch.no_grad():
            self.ref = feature_statistics(clf.features(train_x))
        self.label_freq = np.bincount(train_y.numpy(), minlength=10) / len(train_y)

    def __call__(self, x: torch.Tensor, bootstrap: int = 0, seed: int = 0) -> dict[str, Any]:
        x = x.float()
        with torch.no_grad():
            f = self.clf.features(x)
            pred = self.clf.head(f).argmax(1).numpy()
            nearest = torch.cdist(x, self.train_x).min(dim=1).values
        f = f.double().numpy()
        out: dict[str, Any] = {"frechet": frechet_distance(*feature_statistics(f), *self.ref)}
        if bootstrap > 1:
            rng = np.random.default_rng(seed)
            boots = [
                frechet_distance(*feature_statistics(f[rng.integers(0, len(f), len(f))]), *self.ref)
                for _ in range(bootstrap)
            ]
            out["frechet_se"] = float(np.std(boots, ddof=1))
        freq = np.bincount(pred, minlength=10) / len(pred)
        out["class_tv"] = float(0.5 * np.abs(freq - self.label_freq).sum())
        out["nearest_train"] = float(nearest.mean())
        return out


def check_sampler_names(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming every entry of ``names`` that is not in
    :data:`splitsde.diffusion.SAMPLERS` (and listing the known names)."""
    from splitsde.diffusion import SAMPLERS

    unknown = [n for n in names if n.strip().lower() not in SAMPLERS]
    if unknown:
        raise ValueError(
            f"unknown sampler name(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(SAMPLERS))}"
        )


def available_samplers(
    names: Sequence[str], process: Any, notes: list[str] | None = None
) -> list[str]:
    """The names among ``names`` that apply to ``process``; those that do not (a VP-only
    sampler on PSLD, say) are skipped with a note. A name that is not in
    :data:`splitsde.diffusion.SAMPLERS` is an error, not a silent skip."""
    import splitsde.diffusion as dm

    check_sampler_names(names)
    out = []
    for name in names:
        key = name.strip().lower()
        try:
            dm.sampler(key).check_process(process)
            out.append(key)
            continue
        except ValueError as err:
            msg = f"sampler {key} skipped on {process.name}: {err}"
        if notes is not None and msg not in notes:
            notes.append(msg)
    return out


def compare_samplers(
    models: dict[str, tuple[Any, torch.nn.Module]],
    measure: Callable[[torch.Tensor, int], dict[str, Any]],
    config: DigitsConfig,
    n: int,
    *,
    notes: list[str],
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> tuple[list[dict[str, Any]], dict[tuple[str, str, int], torch.Tensor]]:
    """Every available sampler at every NFE budget on every process (``models`` maps a
    process name to ``(process, network)``); returns the rows and the samples by
    ``(process, sampler, budget)``. ``progress`` shows one bar over all of them."""
    import splitsde.diffusion as dm

    rows, samples = [], {}
    plan = [
        (proc_name, proc, dm.ScoreModel(net, proc, parametrisation="eps"), name)
        for proc_name, (proc, net) in models.items()
        for name in available_samplers(config.samplers, proc, notes)
    ]
    bar = progress_bar(len(plan) * len(config.nfe), "sample", progress, unit="run")
    if bar is not None and log is not None:
        log = bar.write
    for proc_name, proc, model, name in plan:
        for budget in config.nfe:
            row: dict[str, Any] = {
                "process": proc_name,
                "sampler": name,
                "nfe_budget": int(budget),
                "samples": n,
            }
            try:
                with torch.no_grad():
                    res = dm.sample(
                        name, proc, model, n, shape=DIM, nfe=budget, grid=config.grid,
                        seed=config.seed, progress=False,
                    )  # fmt: skip
                row.update(nfe=res.nfe, steps=res.steps, seconds=res.wall_time)
                x = res.x
                if torch.isfinite(x).all():
                    x = x.clamp(-1.0, 1.0)
                    row.update(measure(x, config.seed + budget))
                    samples[(proc_name, name, int(budget))] = x
                else:
                    row.update(frechet=float("inf"))
            except dm.BudgetError as err:
                row.update(error=str(err), error_short="budget<1 step")
            except FloatingPointError as err:
                row.update(error=str(err), error_short="diverged")
            rows.append(row)
            if bar is not None:
                bar.update(1)
            if log is not None:
                log(f"  {proc_name:14} {name:10} NFE {budget:>4}: {_cell(row)}")
    if bar is not None:
        bar.close()
    return rows, samples


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def mosaic(x: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """The first ``rows * cols`` images of ``x`` (``(n, 64)`` in [-1, 1]) tiled with a
    one-pixel gap, as a float array in [0, 1] (NaN in the gaps)."""
    imgs = ((x[: rows * cols].detach().double().numpy() + 1) / 2).reshape(-1, SIDE, SIDE)
    out = np.full((rows * (SIDE + 1) - 1, cols * (SIDE + 1) - 1), np.nan)
    for k, img in enumerate(imgs):
        r, c = divmod(k, cols)
        out[r * (SIDE + 1) : r * (SIDE + 1) + SIDE, c * (SIDE + 1) : c * (SIDE + 1) + SIDE] = img
    return out


def plot_grids(
    samples: dict[tuple[str, str, int], torch.Tensor],
    real: torch.Tensor,
    rows: list[dict[str, Any]],
    out: Path,
    side: int = 6,
) -> dict[str, str]:
    """One PNG per (process, sampler): a mosaic of the first ``side**2`` samples per NFE budget
    (same prior draws and seed; the Brownian increments differ with the grid, so the digits
    do), and one of held-out real digits. Returns the paths by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    fd = {(r["process"], r["sampler"], r["nfe_budget"]): r.get("frechet") for r in rows}
    files = {}
    fig, ax = plt.subplots(figsize=(2.4, 2.6))
    ax.imshow(mosaic(real, side, side), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title("real (held-out)", fontsize=9)
    ax.axis("off")
    path = out / "digits-real.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    files["real"] = str(path)
    for proc, name in dict.fromkeys((p, s) for p, s, _ in samples):
        budgets = sorted(b for p, s, b in samples if (p, s) == (proc, name))
        fig, axes = plt.subplots(1, len(budgets), figsize=(2.2 * len(budgets), 2.6), squeeze=False)
        for ax, b in zip(axes[0], budgets):
            ax.imshow(
                mosaic(samples[(proc, name, b)], side, side),
                cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
            )  # fmt: skip
            v = fd[(proc, name, b)]
            ax.set_title(f"NFE {b}" + (f", FD {v:.3g}" if v is not None else ""), fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{name} on {proc}", fontsize=10)
        fig.tight_layout()
        path = out / f"digits-{proc}-{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        files[f"{proc}/{name}"] = str(path)
    return files


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
def run(
    config: DigitsConfig | None = None,
    out: str | Path | None = "splitsde-digits",
    *,
    cache: str | Path | None = None,
    verbose: bool = True,
    progress: bool | None = None,
) -> DigitsResult:
    """Train (or load) the networks, compare the samplers, write ``digits.json`` and the PNG
    grids into ``out`` (``None``: write nothing) and print the table when ``verbose``.

    ``progress`` shows progress bars for training and sampling on standard error (default:
    when it is a terminal)."""
    with _single_threaded_blas():
        return _run(config or DigitsConfig(), out, cache, verbose, progress)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """NumPy's BLAS limited to one thread: the kernels and sampler coefficients are tiny
    (2x2) matrix operations, which a threaded BLAS slows down by orders of magnitude on a
    loaded machine. Torch's own threads are left alone."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _run(
    config: DigitsConfig,
    out: str | Path | None,
    cache: str | Path | None,
    verbose: bool,
    progress: bool | None = None,
) -> DigitsResult:
    import splitsde.diffusion as dm

    log = (lambda s: print(s, flush=True)) if verbose else None
    directory = cache_dir(cache, sub="digits")
    check_writable(directory)  # before any training, not after
    data = load_digits(config.held_out, config.seed)
    notes: list[str] = []
    procs = [dm.process(name) for name in config.processes]
    if log:
        log(
            f"digits: {len(data.train_x)} training / {len(data.test_x)} held-out images; "
            f"cache {directory}"
        )
    clf, clf_info = train_classifier(data, config, directory, progress=progress)
    if log:
        how = "cached" if clf_info["cached"] else f"trained in {clf_info['seconds']:.1f} s"
        log(f"  classifier ({how}): held-out accuracy {clf_info['accuracy']:.3f}")
    models, training = {}, {}
    for proc in procs:
        if not available_samplers(config.samplers, proc):
            notes.append(f"no requested sampler applies to {proc.name}; its network is not trained")
            continue
        net, info = score_network(proc, data, config, directory, log=log, progress=progress)
        models[proc.name] = (proc, net)
        training[proc.name] = info
        if log:
            how = (
                "loaded from the cache" if info["cached"] else f"trained in {info['seconds']:.0f} s"
            )
            log(f"  {proc.name} score network {how} ({info['path']})")
    measure = Measure(clf, data.train_x, data.train_y)
    n = config.samples or len(data.test_x)
    floor = {"samples": min(n, len(data.test_x))}
    floor.update(measure(data.test_x[:n], config.bootstrap, config.seed))
    pick = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(config.seed))
    copy = {"samples": min(n, len(data.train_x))}
    copy.update(measure(data.train_x[pick[:n]], config.bootstrap, config.seed))
    if n > len(data.test_x):
        notes.append(
            f"{n} generated samples but only {len(data.test_x)} held-out images: the floor is "
            "measured at the smaller count"
        )
    rows, samples = compare_samplers(
        models,
        lambda x, seed: measure(x, config.bootstrap, seed),
        config,
        n,
        notes=notes,
        log=log,
        progress=progress,
    )
    result = DigitsResult(config, floor, copy, clf_info, training, rows, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr if not verbose else sys.stdout)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        result.files = plot_grids(samples, data.test_x, rows, folder)
        path = folder / "digits.json"
        result.files["json"] = str(path)
        path.write_text(json.dumps(_jsonable(result.to_json()), indent=2))
    if verbose:
        print()
        print(result.table())
        for metric in ("class_tv", "nearest_train"):
            print()
            print(result.table(metric))
        if result.files:
            print(f"wrote {result.files['json']} and {len(result.files) - 1} PNG grids")
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return x.item()
    return x


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _names(text: str) -> tuple[str, ...]:
    out = tuple(v.strip() for v in text.split(",") if v.strip())
    if not out:
        raise argparse.ArgumentTypeError("give at least one name")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``splitsde digits`` (shared with ``python -m
    splitsde.apps.examples.digits``)."""
    from splitsde.apps.cli.common import (
        positive_int,
        positive_int_list,
        seed,
        threads,
        writable_dir,
    )
    from splitsde.diffusion.grids import GRIDS

    d = DigitsConfig()
    p.add_argument(
        "--out",
        type=writable_dir,
        default="splitsde-digits",
        help="output folder (JSON and PNG grids)",
    )
    p.add_argument(
        "--cache-dir",
        type=writable_dir,
        default=None,
        help="folder of cached weights (default: $SPLITSDE_CACHE_DIR, $XDG_CACHE_HOME/splitsde "
        "or ~/.cache/splitsde, then /digits)",
    )
    p.add_argument(
        "--samplers",
        type=_names,
        default=d.samplers,
        help="comma-separated names from splitsde.diffusion.SAMPLERS (see `splitsde compare "
        f"--help`); unknown names are an error (default {','.join(d.samplers)})",
    )
    p.add_argument(
        "--processes", type=_names, default=d.processes, help=f"default {','.join(d.processes)}"
    )
    p.add_argument(
        "--nfe",
        type=positive_int_list,
        default=d.nfe,
        help="NFE budgets (default 10,20,50,100,200)",
    )
    p.add_argument(
        "--grid", default=d.grid, choices=GRIDS, help="time grid of the samplers (default uniform)"
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="generated samples (default: the held-out size)",
    )
    p.add_argument("--train-steps", type=positive_int, default=d.train_steps)
    p.add_argument(
        "--width", type=positive_int, default=d.width, help="hidden width of the score MLP"
    )
    p.add_argument(
        "--depth", type=positive_int, default=d.depth, help="residual blocks of the score MLP"
    )
    p.add_argument("--seed", type=seed, default=d.seed, help="0 to 2**63 - 1")
    p.add_argument("--tiny", action="store_true", help="seconds-long sizes to try the pipeline")
    p.add_argument(
        "--threads", type=threads, default=None, help="torch threads, 1 to 4096 (default: torch's)"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars for training and sampling (default: on a terminal)",
    )


def config_from_args(args: argparse.Namespace) -> DigitsConfig:
    """A :class:`DigitsConfig` from parsed options (``--tiny`` starts from the tiny sizes and
    keeps the options given explicitly)."""
    d = DigitsConfig()
    given = {
        "processes": args.processes,
        "samplers": args.samplers,
        "nfe": args.nfe,
        "grid": args.grid,
        "samples": args.samples,
        "train_steps": args.train_steps,
        "width": args.width,
        "depth": args.depth,
        "seed": args.seed,
    }
    if args.tiny:
        base = DigitsConfig.tiny()
        changed = {k: v for k, v in given.items() if v != getattr(d, k)}
        return replace(base, **changed)
    return replace(d, **given)


def run_from_args(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run(config_from_args(args), args.out, cache=args.cache_dir, progress=args.progress)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m splitsde.apps.examples.digits [options]`` (the same as ``splitsde digits``)."""
    p = argparse.ArgumentParser(
        prog="python -m splitsde.apps.examples.digits", description=__doc__.split("\n\n")[0]
    )
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_from_args(args)
    except (ValueError, ImportError) as err:
        print(f"digits: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
