"""The scheduler layer (pecmae_hub.sampling.schedulers): exactness, determinism, persistence, errors, lazy import."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_autoencoder

from pecmae_hub.errors import ConfigError
from pecmae_hub.sampling.schedulers import (
    CONFIG_NAME,
    SAMPLER_NAME,
    SCHEDULERS,
    load_scheduler,
    make_scheduler,
    model_angles,
    sample,
    save_scheduler,
    scheduler_from_dict,
    scheduler_to_dict,
)
from pecmae_hub.sampling.v_diffusion import sample_v_diffusion

DIFFUSERS = [name for name in SCHEDULERS if name != "upstream"]
# diffusers' own numpy 2 deprecation notice inside set_timesteps, not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def exact_predictor(x0: torch.Tensor):
    """v = α·ε − σ·x0 with ε recovered from the current x and angle s (the perfect denoiser for x0)."""

    def predict_v(x, s, code):
        s = s.double().reshape(-1, 1, 1)
        alpha, sigma = torch.cos(s * math.pi / 2), torch.sin(s * math.pi / 2)
        target = x0.double().repeat(x.shape[0] // x0.shape[0], 1, 1)
        eps = (x.double() - alpha * target) / sigma
        return (alpha * eps - sigma * target).float()

    return predict_v


def toy_predictor(x, s, code):
    """A smooth, code-dependent stand-in for the denoiser (not exact: samplers differ with it)."""
    return torch.tanh(x) * (0.5 + s.reshape(-1, 1, 1)) + code.mean(1).reshape(-1, 1, 1)


def _inputs(seed=0, n=2, frames=6, dim=3):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, frames, dim, generator=gen),
        torch.randn(n, frames, dim, generator=gen),
        torch.randn(n, 4, generator=gen),
    )


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("steps", [1, 6, 16, 40])
@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_exact_predictor_recovers_x0(name, steps, guidance):
    x0, noise, code = _inputs()
    out = sample(exact_predictor(x0), code, noise, scheduler=name, steps=steps, guidance=guidance)
    assert out.shape == x0.shape and out.dtype == torch.float32
    assert (out - x0).abs().max().item() < 1e-5


def test_angles_follow_our_grid():
    """Trailing spacing + our betas: s_i = linspace(1, 0, N+1)[:N] (step counts dividing 1000)."""
    for name in DIFFUSERS:
        for steps in (10, 40):
            expected = torch.linspace(1, 0, steps + 1)[:steps]
            assert torch.allclose(model_angles(make_scheduler(name, steps)), expected, atol=1e-5), name


def test_upstream_is_bit_identical():
    _, noise, code = _inputs(1)
    calls = []
    expected = sample_v_diffusion(toy_predictor, code, noise, 7, 1.5)
    got = sample(
        toy_predictor,
        code,
        noise,
        scheduler="upstream",
        steps=7,
        guidance=1.5,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert torch.equal(got, expected)
    assert calls == [(i, 7) for i in range(1, 8)]
    assert torch.equal(
        sample(toy_predictor, code, noise, {"name": "upstream"}, 3, 0.0),
        sample_v_diffusion(toy_predictor, code, noise, 3, 0.0),
    )


def test_ddim_matches_upstream_on_its_grid():
    _, noise, code = _inputs(2)
    expected = sample_v_diffusion(toy_predictor, code, noise, 20, 1.0)
    got = sample(toy_predictor, code, noise, scheduler="ddim", steps=20, guidance=1.0)
    assert (got - expected).norm() / expected.norm() < 1e-4


def test_autoencoder_decode_with_schedulers(one_thread):
    ae = tiny_autoencoder()
    z = torch.randn(2, ae.embedding_dim, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, ae.chunk_frames, ae.config.signal_dim, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        exact = sample_v_diffusion(ae.predict_v, z, noise, 4, 1.0, x0_range=ae.signal_range)
    assert torch.equal(ae.decode_latents(z, 4, noise=noise), exact)
    assert torch.equal(ae.decode_latents(z, 4, noise=noise, scheduler="upstream"), exact)
    for name in DIFFUSERS:
        calls: list[tuple[int, int]] = []
        a = ae.decode_latents(z, 4, seed=5, scheduler=name, progress=lambda i, n, seen=calls: seen.append((i, n)))
        assert torch.equal(a, ae.decode_latents(z, 4, seed=5, scheduler=name)), name
        assert not torch.equal(a, ae.decode_latents(z, 4, seed=6, scheduler=name)), name
        assert calls == [(i, 4) for i in range(1, 5)]
    wav = ae.decode(z[:1], steps=3, seed=0, scheduler="unipc")
    assert wav.shape == (ae.chunk_samples,) and bool(torch.isfinite(torch.from_numpy(wav)).all())


def test_x0_clipping_keeps_every_sampler_inside_the_signal_range(one_thread):
    """A predictor that overshoots (x̂0 far outside the range) yields samples within the range with clipping,
    for the exact sampler and the diffusers schedulers alike; without it, outside."""
    from pecmae_hub.sampling.v_diffusion import clip_v

    def overshooting(x, s, code):
        return -10.0 * torch.ones_like(x)  # at s = 1 this means x̂0 = +10

    noise = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(0))
    code = torch.zeros(1, 3)
    for name in ("upstream", *DIFFUSERS):
        free = sample(overshooting, code, noise, scheduler=name, steps=4, guidance=0.0)
        clipped = sample(overshooting, code, noise, scheduler=name, steps=4, guidance=0.0, x0_range=(-1.0, 2.0))
        assert free.max() > 5.0, name
        assert clipped.min() >= -1.0 - 1e-4 and clipped.max() <= 2.0 + 1e-4, name
    # clip_v leaves a prediction whose x̂0 is already inside untouched
    x, v = torch.zeros(2, 3), torch.full((2, 3), 0.5)
    assert torch.allclose(clip_v(v, x, torch.tensor(0.5), (-1.0, 1.0)), v)


def test_instances_are_copied_not_mutated():
    _, noise, code = _inputs(3)
    scheduler = make_scheduler("unipc")
    first = sample(toy_predictor, code, noise, scheduler=scheduler, steps=5)
    assert scheduler.num_inference_steps is None  # the caller's instance is left untouched
    assert torch.equal(first, sample(toy_predictor, code, noise, scheduler=scheduler, steps=5))


@pytest.mark.parametrize("name", DIFFUSERS)
def test_config_round_trip(name, tmp_path):
    scheduler = make_scheduler(name)
    save_scheduler(scheduler, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["_class_name"] == type(scheduler).__name__ and config["prediction_type"] == "v_prediction"
    assert json.loads((tmp_path / SAMPLER_NAME).read_text())["name"] == name
    loaded = load_scheduler(tmp_path)
    assert type(loaded) is type(scheduler)
    strip = lambda c: {k: v for k, v in dict(c).items() if not k.startswith("_")}  # noqa: E731
    assert json.dumps(strip(loaded.config), sort_keys=True, default=list) == json.dumps(
        strip(scheduler.config), sort_keys=True, default=list
    )
    _, noise, code = _inputs(4)
    assert torch.equal(sample(toy_predictor, code, noise, loaded, 8), sample(toy_predictor, code, noise, name, 8))
    assert scheduler_to_dict(loaded) == {"name": name}


def test_dict_names_and_upstream_folder(tmp_path):
    assert scheduler_to_dict("UniPC") == {"name": "unipc"}
    custom = scheduler_to_dict(make_scheduler("dpmsolver++", solver_order=3))
    assert custom == {"name": "dpmsolver++", "solver_order": 3}
    assert scheduler_from_dict(custom).config.solver_order == 3
    assert scheduler_from_dict({"name": "upstream"}) == "upstream"
    save_scheduler("unipc", tmp_path)
    save_scheduler("upstream", tmp_path)  # replaces the diffusers config
    assert not (tmp_path / CONFIG_NAME).exists()
    assert load_scheduler(tmp_path) == "upstream"
    with pytest.raises(ConfigError):
        scheduler_from_dict({"name": "upstream", "solver_order": 2})


def test_recommended_steps_cover_every_scheduler():
    from pecmae_hub.sampling.schedulers import DEFAULT_SCHEDULER, recommended_steps

    assert DEFAULT_SCHEDULER in SCHEDULERS
    assert all(1 <= recommended_steps(name) <= 1000 for name in SCHEDULERS)
    assert recommended_steps("UPSTREAM") == 40


def test_unknown_name_lists_choices():
    _, noise, code = _inputs()
    for call in (
        lambda: sample(toy_predictor, code, noise, scheduler="euler", steps=4),
        lambda: make_scheduler("euler"),
        lambda: tiny_autoencoder().decode_latents(torch.zeros(1, 32), 4, seed=0, scheduler="euler"),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert all(choice in str(info.value) for choice in SCHEDULERS)
    with pytest.raises(ConfigError):
        make_scheduler("unipc", no_such_option=1)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_steps_out_of_range(name):
    _, noise, code = _inputs()
    for steps in [0, 1001, 2.5, True] if name != "upstream" else [0, -3, 2.5]:
        with pytest.raises(ConfigError):
            sample(toy_predictor, code, noise, scheduler=name, steps=steps)
    assert sample(toy_predictor, code, noise, scheduler=name, steps=1).shape == noise.shape


def test_classifying_does_not_import_diffusers():
    tests = Path(__file__).parents[1]
    code = f"""
import sys, numpy as np
sys.path.insert(0, {str(tests)!r})
import pecmae_hub.sampling, pecmae_hub.sampling.schedulers, pecmae_hub.models.autoencoder
from conftest import tiny_pecmae
model = tiny_pecmae()
model.classify(np.random.default_rng(0).standard_normal(30000).astype('float32') * 0.1, sr=24000)
model.sonify(0, steps=2, scheduler='upstream')
from pecmae_hub.sampling.schedulers import scheduler_to_dict
assert scheduler_to_dict(dict(name='UniPC')) == scheduler_to_dict('unipc') == dict(name='unipc')
before = 'diffusers' in sys.modules
model.autoencoder.decode(model.head.effective_prototypes()[:1].detach(), steps=2, seed=0, scheduler='ddim')
print(before, 'diffusers' in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["False", "True"]
