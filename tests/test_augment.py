"""The batched test-time augmentation makes the reference's views: the same drawn parameters
through :meth:`Augment.views` (all views in one pass) and :meth:`Augment.reference_view`
(torchvision's functions, one view at a time, in qinenergy/cotta's ``get_tta_transforms``
structure) give the same images to float rounding; the draws follow the reference's ranges; and
a teacher that takes all views in one forward normalises each view as one forward per view."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cladapt.augment import OPS, Augment, per_view_statistics, teacher_views
from cladapt.models.small_cnn import SmallCNN
from cladapt.stream import TTAAugmentation


def _colour_batch(b: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.rand(b, 3, size // 4, size // 4, generator=g)
    x = nn.functional.interpolate(smooth, size=(size, size), mode="bilinear")
    return (x + 0.05 * torch.rand(b, 3, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize(  # 96 px: the blur's convolution path (above BAND_BLUR_MAX_SIDE)
    "size,soft,tolerance",
    [(32, False, 1e-5), (32, True, 1e-5), (64, False, 1e-5), (96, False, 2e-5)],
)
def test_batched_views_equal_the_reference_view_by_view(size, soft, tolerance):
    torch.manual_seed(0)
    aug = Augment(size, soft=soft)
    x = _colour_batch(4, size)
    p = aug.draw(12)
    assert p.flip.any() and (~p.flip).any()  # both branches of the flip are exercised
    torch.manual_seed(1)
    batched = aug.views(x, p).view(12, 4, 3, size, size)
    torch.manual_seed(1)
    noise = torch.randn(batched.shape) * aug.noise_std  # the same draw views() made
    for v in range(12):
        ref = aug.reference_view(x, p, v, noise=noise[v])
        err = (batched[v] - ref).abs().max().item()
        assert err < tolerance, (v, err)
    assert not torch.allclose(batched[0], batched[1], atol=1e-2)  # the views differ


def test_each_colour_op_in_every_position_of_the_order():
    """The five ops at each of the five positions of ColorJitterPro's random order: the batched
    code applies, at each position, each op to the views that have it there."""
    torch.manual_seed(0)
    aug = Augment(32)
    x = _colour_batch(2, 32, seed=3)
    p = aug.draw(5)
    p.order = torch.stack([torch.roll(torch.arange(5), k) for k in range(5)])  # Latin square
    p.angle.zero_(), p.tx.zero_(), p.ty.zero_(), p.scale.fill_(1.0), p.flip.zero_()
    out = aug.views(x, p).view(5, 2, 3, 32, 32)
    zero = torch.zeros(2, 3, 32, 32)
    for v in range(5):
        ref = aug.reference_view(x, p, v, noise=zero)
        assert (out[v] - ref).abs().max() < aug.noise_std * 6 + 1e-5


def test_draws_follow_the_reference_ranges_and_distributions():
    """ColorJitterPro / RandomAffine / GaussianBlur / RandomHorizontalFlip draw uniformly over
    their ranges: each draw stays inside and covers it (quartiles within 0.05 of the uniform's),
    translations are whole pixels up to 1/16 of the padded side, each op's position in the
    order is uniform, flips are fair."""
    torch.manual_seed(0)
    aug = Augment(32)
    n = 4000
    p = aug.draw(n)
    for name in ("brightness", "contrast", "saturation", "hue", "gamma", "angle", "scale", "sigma"):
        lo, hi = aug.ranges[name]
        d = getattr(p, name)
        assert lo <= float(d.min()) and float(d.max()) <= hi, name
        q = torch.quantile(d, torch.tensor([0.25, 0.5, 0.75]))
        expected = torch.tensor([lo + (hi - lo) * k for k in (0.25, 0.5, 0.75)])
        assert torch.allclose(q, expected, atol=0.05 * (hi - lo)), name
    assert aug.ranges["hue"] == (-0.06, 0.06) and aug.ranges["angle"] == (-15.0, 15.0)
    padded = 32 + 2 * 16
    assert torch.equal(p.tx, p.tx.round()) and float(p.tx.abs().max()) <= padded / 16
    assert float(p.tx.abs().max()) >= padded / 16 - 1  # reaches the edge of the range
    for op in range(len(OPS)):
        where = (p.order == op).float().mean(0)  # share of views with op at each position
        assert torch.allclose(where, torch.full((5,), 0.2), atol=0.03)
    assert abs(p.flip.float().mean().item() - 0.5) < 0.03
    digits = Augment(32, policy=TTAAugmentation(hflip=False, max_degrees=10))
    q = digits.draw(500)
    assert not q.flip.any() and float(q.angle.abs().max()) <= 10


def test_parameters_outside_the_exact_range_are_refused():
    aug = Augment(32)
    p = aug.draw(3)
    p.angle[0] = 30.0
    with pytest.raises(ValueError, match="outside CoTTA's ranges"):
        aug.views(torch.rand(2, 3, 32, 32), p)


def _batch_stat_cnn() -> nn.Module:
    torch.manual_seed(0)
    m = SmallCNN(num_classes=10)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.track_running_stats = False
            bn.running_mean = bn.running_var = None
            bn.weight.data.uniform_(0.5, 1.5)
    return m.train()


def test_one_forward_over_all_views_normalises_each_view_as_its_own_forward():
    model = _batch_stat_cnn()
    x = torch.rand(4 * 6, 3, 32, 32)
    with torch.no_grad():
        one_by_one = torch.cat([model(part) for part in x.split(6)])
        with per_view_statistics(model, 4):
            together = model(x)
        plain = model(x)  # without the patch: statistics over all views at once
    assert torch.allclose(together, one_by_one, atol=1e-4)
    assert not torch.allclose(plain, one_by_one, atol=1e-3)
    assert not any("forward" in m.__dict__ for m in model.modules())  # the patch is removed


def test_teacher_views_are_the_same_on_every_chunk_size(monkeypatch):
    """Chunking by the memory budget (and the CPU's one view per forward) changes how the work
    is cut, never the logits."""
    model = _batch_stat_cnn()
    x = torch.rand(5, 3, 32, 32)
    aug = Augment(32)
    outs = []
    for memory_mb in (1e-6, 0.1, 4096):
        torch.manual_seed(7)
        outs.append(teacher_views(copy.deepcopy(model), x, aug, 6, memory_mb))
    assert outs[0].shape == (6, 5, 10)
    for other in outs[1:]:
        assert torch.allclose(outs[0], other, atol=1e-5)
