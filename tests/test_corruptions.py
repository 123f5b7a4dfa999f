"""The torch corruptions against the reference definitions (Hendrycks & Dietterich's scripts)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cladapt.data.corruptions import CORRUPTIONS, PARAMS, corrupt, parameter_set
from cladapt.errors import ConfigError, UnknownNameError


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_shape_range_quantised_and_seeded(name):
    x = _images()
    for severity in (1, 5):
        a = corrupt(x, name, severity, 7)
        b = corrupt(x, name, severity, 7)
        assert a.shape == x.shape and a.dtype == torch.float32
        assert a.min() >= 0 and a.max() <= 1
        assert torch.equal(a * 255, torch.round(a * 255))  # 8-bit levels, like the .npy files
        assert torch.equal(a, b)  # same seed, same output
    assert not torch.equal(corrupt(x, name, 5, 7), x)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "snow", "fog"])
def test_random_corruptions_change_with_the_seed(name):
    x = _images()
    assert not torch.equal(corrupt(x, name, 3, 1), corrupt(x, name, 3, 2))


def test_parameter_set_follows_image_size():
    assert parameter_set(32) == "cifar" and parameter_set(64) == "cifar"
    assert parameter_set(224) == "imagenet"
    assert set(PARAMS["cifar"]) == set(PARAMS["imagenet"]) == set(CORRUPTIONS)


@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_noise_std_matches_reference(severity):
    x = torch.full((64, 3, 32, 32), 0.5)
    c = PARAMS["cifar"]["gaussian_noise"][severity - 1]
    noise = corrupt(x, "gaussian_noise", severity, 0) - 0.5
    # floor quantisation shifts the mean by ~half a level and adds ~1/(255*sqrt(12)) of std
    assert noise.std().item() == pytest.approx(c, rel=0.05, abs=0.002)
    assert noise.mean().item() == pytest.approx(-0.5 / 255, abs=0.002)


def test_shot_noise_is_poisson_with_rate_c():
    x = torch.full((64, 3, 32, 32), 0.4)
    c = PARAMS["cifar"]["shot_noise"][4]  # 50
    y = corrupt(x, "shot_noise", 5, 0)
    assert y.mean().item() == pytest.approx(0.4, abs=0.005)
    assert y.var().item() == pytest.approx(0.4 / c, rel=0.1)


def test_impulse_noise_flips_a_fraction_c_to_black_or_white():
    x = torch.full((64, 3, 32, 32), 0.5)
    c = PARAMS["cifar"]["impulse_noise"][4]
    y = corrupt(x, "impulse_noise", 5, 0)
    salt, pepper = (y == 1).float().mean().item(), (y == 0).float().mean().item()
    assert salt + pepper == pytest.approx(c, rel=0.1)
    assert salt == pytest.approx(pepper, rel=0.2)


def test_contrast_scales_per_channel_deviation():
    x = _images(8)
    c = PARAMS["cifar"]["contrast"][4]
    y = corrupt(x, "contrast", 5, 0)
    ratio = y.std(dim=(2, 3)) / x.std(dim=(2, 3))
    assert torch.allclose(ratio, torch.full_like(ratio, c), atol=0.02)


def test_brightness_adds_c_to_hsv_value_and_keeps_hue():
    x = _images(8) * 0.5
    c = PARAMS["cifar"]["brightness"][2]
    y = corrupt(x, "brightness", 3, 0)
    assert (y.amax(1) - x.amax(1)).mean().item() == pytest.approx(c, abs=0.01)
    # channel ratios (hue, saturation) are kept
    assert torch.allclose(y[:, 0] * x[:, 1], y[:, 1] * x[:, 0], atol=0.01)


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "motion_blur", "glass_blur"])
def test_blurs_keep_a_constant_image_constant(name):
    x = torch.full((2, 3, 32, 32), 100 / 255)
    y = corrupt(x, name, 5, 0)
    assert (y - x).abs().max().item() <= 1.5 / 255


def test_noise_grows_with_severity():
    x = _images(16)
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "contrast"):
        dev = [(corrupt(x, name, s, 0) - x).abs().mean().item() for s in range(1, 6)]
        assert dev == sorted(dev), name


def _pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("size,severity", [(32, 5), (224, 3)])
def test_pixelate_equals_pil_box_resampling(size, severity):
    x = torch.round(_images(2, size) * 255) / 255
    c = PARAMS[parameter_set(size)]["pixelate"][severity - 1]
    y = corrupt(x, "pixelate", severity, 0)
    for i in range(2):
        small = _pil(x[i]).resize((int(size * c), int(size * c)), Image.BOX)
        ref = _from_pil(small.resize((size, size), Image.BOX))
        assert (y[i] - ref).abs().max().item() <= 2 / 255


def test_jpeg_matches_pil_at_the_same_quality():
    x = torch.round(_images(2) * 255) / 255
    y = corrupt(x, "jpeg_compression", 5, 0)
    q = PARAMS["cifar"]["jpeg_compression"][4]
    for i in range(2):
        buf = io.BytesIO()
        _pil(x[i]).save(buf, "JPEG", quality=q)
        ref = _from_pil(Image.open(buf).convert("RGB"))
        assert torch.equal(y[i], ref)
    assert (y - x).abs().mean().item() > 0.02  # it did compress


def test_imagenet_parameters_apply_to_large_images():
    x = _images(1, 224)
    y = corrupt(x, "gaussian_noise", 5, 0)
    assert (y - x).std().item() > 0.2  # ImageNet severity 5: std 0.38 before clipping


def test_bad_input_gives_clear_errors():
    x = _images(1)
    with pytest.raises(UnknownNameError, match="did you mean"):
        corrupt(x, "gausian_noise", 1, 0)
    with pytest.raises(ConfigError, match="severity"):
        corrupt(x, "fog", 6, 0)
    with pytest.raises(ConfigError, match="N, C, H, W"):
        corrupt(x[0], "fog", 1, 0)
