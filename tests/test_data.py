import torch

from cladapt.data.digits import digits_split, subset_classes
from cladapt.data.shifts import SHIFTS, apply_shift


def test_digits_split_is_fixed_and_shaped():
    train, test = digits_split()
    assert len(train) == 1257 and len(test) == 540
    x, y = train.tensors
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(y.tolist()) == set(range(10))
    # no image is in both splits
    flat_tr = {tuple(v) for v in train.tensors[0][:, 0].flatten(1).mul(255).round().int().tolist()}
    flat_te = {tuple(v) for v in test.tensors[0][:, 0].flatten(1).mul(255).round().int().tolist()}
    assert len(flat_tr & flat_te) < 5  # sklearn digits holds a handful of duplicate scans


def test_subset_classes():
    train, _ = digits_split()
    sub = subset_classes(train, [3, 7])
    assert set(sub.tensors[1].tolist()) == {3, 7}
    assert len(sub) == int(((train.tensors[1] == 3) | (train.tensors[1] == 7)).sum())


def test_shifts_are_seeded_and_stay_in_range():
    x = digits_split()[1].tensors[0][:64]
    for name in SHIFTS:
        a, b, c = (apply_shift(x, name, 0.3 if name != "blur" else 1.5, s) for s in (1, 1, 2))
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, b), name
        if name in ("gaussian_noise", "salt_pepper"):
            assert not torch.equal(a, c), name


def test_gaussian_noise_has_the_requested_std_before_clipping():
    x = torch.full((16, 3, 32, 32), 0.5)
    noisy = apply_shift(x, "gaussian_noise", 0.1, seed=0)  # 5 sigma from the clip bounds
    assert abs(float((noisy - x).std()) - 0.1) < 0.005
