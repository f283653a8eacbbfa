"""The digits example end to end at a tiny size, its cache, and its training inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

import splitsde.diffusion as dm
from splitsde.apps.examples import digits
from splitsde.apps.examples.cache import cache_dir, config_key
from splitsde.apps.examples.networks import ScoreMLP


def test_tiny_pipeline_writes_results_and_reuses_the_cache(tmp_path, monkeypatch):
    config = digits.DigitsConfig.tiny()
    cache = tmp_path / "cache"
    first = digits.run(config, tmp_path / "out", cache=cache, verbose=False)

    # structure: every (process, sampler, budget) measured, 1 NFE per step as budgeted
    keys = {(r["process"], r["sampler"], r["nfe_budget"]) for r in first.rows}
    assert keys == {
        (p, s, n) for p in ("vp", "psld-cifar10") for s in ("em", "sscs") for n in (5, 10)
    }
    for r in first.rows:
        assert r["nfe"] == r["nfe_budget"] and r["samples"] == config.samples
        assert math.isfinite(r["frechet"]) and r["frechet"] > 0
        assert math.isfinite(r["frechet_se"]) and r["frechet_se"] >= 0
        assert 0 <= r["class_tv"] <= 1 and r["nearest_train"] > 0
    for base in (first.floor, first.copy):
        assert math.isfinite(base["frechet"]) and base["frechet"] >= 0
    assert first.copy["nearest_train"] == 0  # training images are their own nearest neighbours
    assert 0 <= first.classifier["accuracy"] <= 1
    assert "Fréchet" in first.table() and "em" in first.table()
    assert "nearest training digit" in first.table("nearest_train")
    with pytest.raises(ValueError, match="unknown metric"):
        first.table("fid")

    # outputs: the JSON (finite numbers only) and one PNG per (process, sampler) plus real digits
    out = json.loads((tmp_path / "out" / "digits.json").read_text())
    assert len(out["rows"]) == 8 and out["floor"]["samples"] == config.samples
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert len(pngs) == 5 and "digits-real.png" in pngs
    assert all((tmp_path / "out" / p).stat().st_size > 0 for p in pngs)

    # the cache: classifier + two score networks, each with its JSON record
    weights = sorted(cache.glob("*.pt"))
    assert len(weights) == 3 and len(list(cache.glob("*.json"))) == 3
    assert not any(info["cached"] for info in first.training.values())
    assert not first.classifier["cached"]
    stamps = {p: p.stat().st_mtime_ns for p in weights}

    # a second run loads everything: training would fail loudly; inapplicable samplers are
    # skipped with a note (the cache keys do not depend on the samplers)
    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the weights are cached")

    monkeypatch.setattr(digits, "train_score_network", no_training)
    monkeypatch.setattr(torch.optim, "Adam", no_training)
    config2 = digits.DigitsConfig.tiny(samplers=("em", "sscs", "sps"))
    second = digits.run(config2, None, cache=cache, verbose=False)
    assert all(info["cached"] for info in second.training.values())
    assert second.classifier["cached"]
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == stamps
    assert any("sps skipped on vp" in n for n in second.notes)
    again = {(r["process"], r["sampler"], r["nfe_budget"]): r["frechet"] for r in second.rows}
    for r in first.rows:  # same weights, same seeds: the same samples and distances
        assert again[(r["process"], r["sampler"], r["nfe_budget"])] == r["frechet"]
    assert ("psld-cifar10", "sps", 5) in again and ("vp", "sps", 5) not in again


def test_cached_weights_load_with_weights_only(tmp_path):
    config = digits.DigitsConfig.tiny()
    data = digits.load_digits(config.held_out, config.seed)
    proc = dm.process("vp")
    net, info = digits.score_network(proc, data, config, tmp_path)
    assert not info["cached"] and info["path"].endswith(".pt")
    state = torch.load(info["path"], weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    fresh = ScoreMLP(64, config.width, config.depth).float()
    fresh.load_state_dict(state)
    z = torch.randn(7, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    t = torch.rand(7, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(z, t), net(z, t))
    again, info2 = digits.score_network(proc, data, config, tmp_path)
    assert info2["cached"] and info2["path"] == info["path"]
    with torch.no_grad():
        assert torch.equal(again(z, t), net(z, t))
    # another configuration is another file
    _, info3 = digits.score_network(proc, data, digits.DigitsConfig.tiny(seed=1), tmp_path)
    assert not info3["cached"] and info3["path"] != info["path"]


def test_kernel_pool_is_stratified_and_reads_the_library_kernel():
    proc = dm.process("psld-cifar10")
    n = 5
    t, a, L = digits.kernel_pool(proc, n, torch.Generator().manual_seed(0))
    edges = proc.eps + (proc.T - proc.eps) * np.arange(n + 1) / n
    u = t.double().numpy()
    assert ((u >= edges[:-1] - 1e-6) & (u <= edges[1:] + 1e-6)).all()  # one time per stratum
    a_ref, S_ref = proc.data_kernel(u)
    np.testing.assert_allclose(a.numpy(), a_ref, rtol=1e-5, atol=1e-6)
    LLt = (L.double() @ L.double().transpose(1, 2)).numpy()
    np.testing.assert_allclose(LLt, S_ref, rtol=1e-5, atol=1e-7)
    assert torch.all(torch.triu(L, diagonal=1) == 0)  # lower factor, as in ScoreModel


def test_perturbed_states_have_the_kernel_law():
    # z = a_t x0 + L_t eps must have mean a_t x0 and covariance S_t, blocks x then m (the order
    # in which ScoreModel concatenates them); at t = 0.05 the blocks are strongly correlated.
    # Monte Carlo with 4-sigma tolerances.
    proc = dm.process("psld-cifar10")
    a_ref, S_ref = proc.data_kernel(0.05)
    n, d = 200_000, 4
    a = torch.tensor(a_ref, dtype=torch.float32).expand(n, 2)
    L = torch.tensor(np.linalg.cholesky(S_ref), dtype=torch.float32).expand(n, 2, 2)
    x0 = torch.tensor([[0.5, -1.0, 0.0, 1.0]], dtype=torch.float32)
    noise = torch.randn(n, 2, d, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    z = digits.perturb(x0.expand(n, d), a, L, noise).double().reshape(n, 2, d)
    S = torch.tensor(S_ref)
    mean = torch.tensor(a_ref)[:, None] * x0.double()
    se_mean = (S.diagonal().sqrt()[:, None] / math.sqrt(n)).expand(2, d)
    assert ((z.mean(0) - mean).abs() <= 4 * se_mean).all()
    r = z - mean
    for i, j in ((0, 0), (1, 1), (0, 1)):
        prod = r[:, i, :] * r[:, j, :]
        se = prod.std(0) / math.sqrt(n)
        assert ((prod.mean(0) - S[i, j]).abs() <= 4 * se).all(), (i, j)


def test_cache_location_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("SPLITSDE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir(sub="digits") == tmp_path / "home" / ".cache" / "splitsde" / "digits"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(sub="digits") == tmp_path / "xdg" / "splitsde" / "digits"
    monkeypatch.setenv("SPLITSDE_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir(sub="digits") == tmp_path / "mine" / "digits"
    assert cache_dir(tmp_path / "explicit", sub="digits") == tmp_path / "explicit"
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_cli_runs_and_rejects_bad_options(tmp_path, capsys):
    from splitsde.apps.cli import main

    argv = ["digits", "--tiny", "--processes", "vp", "--samplers", "em", "--nfe", "5"]
    argv += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "floor" in text and "NFE 5" in text
    assert (tmp_path / "out" / "digits-vp-em.png").exists()
    with pytest.raises(SystemExit) as exc:
        main(["digits", "--grid", "nonsense"])
    assert exc.value.code == 2
    assert main(["digits", "--tiny", "--nfe", "5", "--samples", "1", "--out", str(tmp_path)]) == 2
    assert "samples must be at least 2" in capsys.readouterr().err


def test_unknown_sampler_name_is_an_error_before_training():
    with pytest.raises(ValueError, match=r"unknown sampler name.*'deis'.*known: .*deis-tab3"):
        digits.DigitsConfig(samplers=("em", "deis"))


def test_default_samplers_are_all_registered():
    assert all(name in dm.SAMPLERS for name in digits.DigitsConfig().samplers)
