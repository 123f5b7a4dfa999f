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


def test_generated_data_is_made_once_and_keyed_by_its_definition(tmp_path, monkeypatch):
    """The disk cache behind digits-c and the rendered fonts: a second process (here: call)
    loads what the first made, and a different definition (code, arguments) is a new entry."""
    from cladapt.cache import cached_tensors

    monkeypatch.setenv("CLADAPT_CACHE", str(tmp_path))
    calls = []

    def build(value: float):
        calls.append(value)
        return (torch.full((2, 3), value), torch.arange(2))

    first = cached_tensors("demo", {"v": 1, "code": "a"}, lambda: build(1.0))
    again = cached_tensors("demo", {"v": 1, "code": "a"}, lambda: build(9.0))
    assert calls == [1.0] and torch.equal(first[0], again[0]) and torch.equal(again[1], first[1])
    changed = cached_tensors("demo", {"v": 1, "code": "b"}, lambda: build(2.0))
    assert calls == [1.0, 2.0] and float(changed[0][0, 0]) == 2.0
    # a truncated file (a crash, a full disk) is rebuilt, not an error
    for p in (tmp_path / "data").glob("demo-*.pt"):
        p.write_bytes(b"PK\x03\x04 truncated")
    rebuilt = cached_tensors("demo", {"v": 1, "code": "a"}, lambda: build(3.0))
    assert calls[-1] == 3.0 and float(rebuilt[0][0, 0]) == 3.0
