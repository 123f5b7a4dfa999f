"""``small-cnn --pretrained``: the trunk pre-trained by the harness on rendered letters (the
simple-baseline miniature), and result rows that say which weights a run used."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from cladapt.results import read_results
from cladapt.runner import RunSpec, execute, model_label


def test_the_model_column_names_the_weights(tmp_path):
    assert model_label("small-cnn", False, None) == "small-cnn"
    assert model_label("small-cnn", True, None) == "small-cnn+pretrained"
    assert model_label("ViT-B-16", "openai", None) == "ViT-B-16+openai"
    # timm's default weights are named by their tag: resnet50's is RSB A1, not torchvision's V1
    assert model_label("resnet50", True, None) == "resnet50.a1_in1k+pretrained"
    assert model_label("resnet50.tv_in1k", True, None) == "resnet50.tv_in1k+pretrained"
    assert model_label("resnet50", True, None, registered=True) == "resnet50+pretrained"
    for folder, content in (("a", b"weights one"), ("b", b"weights two")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "source.pt").write_bytes(content)
        (tmp_path / folder / "clip.safetensors").write_bytes(content)
    one, two = (
        model_label("small-cnn", False, str(tmp_path / f / "source.pt")) for f in ("a", "b")
    )
    assert one.startswith("small-cnn@source.pt#") and one != two  # one name, two models
    clip_one, clip_two = (
        model_label("ViT-B-16", str(tmp_path / f / "clip.safetensors"), None) for f in ("a", "b")
    )
    assert clip_one.startswith("ViT-B-16+clip.safetensors#") and clip_one != clip_two


def test_pretrained_small_cnn_loads_the_letters_trunk_once(catalog, out, tmp_path, monkeypatch):
    from cladapt.models import letters_pretrain as lp
    from cladapt.models.checkpoints import load_cached
    from cladapt.models.small_cnn import SmallCNN

    monkeypatch.setenv("CLADAPT_CACHE", str(tmp_path / "cache"))  # a fresh cache: pre-train here
    tiny = functools.partial(lp.LettersRecipe, images=208, epochs=1, batch_size=64)
    monkeypatch.setattr(lp, "LettersRecipe", tiny)
    trained = []
    real = lp.pretrain
    monkeypatch.setattr(lp, "pretrain", lambda *a, **k: trained.append(1) or real(*a, **k))

    for seed in (0, 1):
        outcome = execute(
            RunSpec("digits", "nmc", {"epochs": "1"}, seed=seed, pretrained=True, out=out),
            catalog,
        )
    assert trained == [1]  # pre-trained once, then loaded from the cache
    donor = SmallCNN(num_classes=len(lp.LETTERS))
    assert load_cached(donor, lp.ensure_pretrained((3, 32, 32)))
    model = outcome.run.model
    model = getattr(model, "model", model)
    trunk, loaded = model.features.state_dict(), donor.features.state_dict()
    for a, b in zip(trunk.values(), loaded.values(), strict=True):
        assert torch.equal(a.cpu(), b)  # nmc never trains the trunk
    assert model.head.out_features == 10  # the stream's head, not the letters'
    rows = read_results(out)
    assert set(rows.model) == {"small-cnn+pretrained"}
    assert all(json.loads(p)["pretrained"] is True for p in rows.params_json)


def test_pretrained_small_cnn_needs_32px_rgb():
    from cladapt.errors import ConfigError
    from cladapt.models.letters_pretrain import ensure_pretrained

    with pytest.raises(ConfigError, match="3x32x32"):
        ensure_pretrained((1, 28, 28))


def test_an_unusable_cached_trunk_is_rebuilt_and_loaded(tmp_path, monkeypatch):
    from cladapt.models import letters_pretrain as lp
    from cladapt.models.checkpoints import load_cached
    from cladapt.models.small_cnn import SmallCNN

    monkeypatch.setenv("CLADAPT_CACHE", str(tmp_path / "cache"))
    tiny = functools.partial(lp.LettersRecipe, images=128, epochs=1, batch_size=64)
    monkeypatch.setattr(lp, "LettersRecipe", tiny)
    path = lp.ensure_pretrained((3, 32, 32))
    path.write_bytes(b"truncated by a full disk")

    model = SmallCNN(num_classes=10)
    with pytest.warns(UserWarning, match="unusable"):
        lp.load_pretrained_backbone(model, (3, 32, 32))
    donor = SmallCNN(num_classes=len(lp.LETTERS))
    assert load_cached(donor, path)  # the rebuilt file
    for a, b in zip(
        model.features.state_dict().values(), donor.features.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_a_trunk_that_cannot_be_loaded_is_an_error_not_random_weights(tmp_path, monkeypatch):
    from cladapt.errors import DataError
    from cladapt.models import letters_pretrain as lp
    from cladapt.models.small_cnn import SmallCNN

    monkeypatch.setenv("CLADAPT_CACHE", str(tmp_path))  # an unusable *cache* file is remade
    bad = tmp_path / "models" / "small-cnn-letters.pt"
    bad.parent.mkdir()

    def always_unusable(input_shape, progress=None):
        bad.write_bytes(b"not a checkpoint")
        return bad

    monkeypatch.setattr(lp, "ensure_pretrained", always_unusable)
    with pytest.warns(UserWarning, match="unusable"), pytest.raises(DataError):
        lp.load_pretrained_backbone(SmallCNN(num_classes=10), (3, 32, 32))
    # a file outside the cache (e.g. weights shipped in the package) is reported, never deleted
    outside = tmp_path.parent / f"{tmp_path.name}-shipped.pt"
    outside.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(lp, "ensure_pretrained", lambda input_shape, progress=None: outside)
    with pytest.raises(DataError):
        lp.load_pretrained_backbone(SmallCNN(num_classes=10), (3, 32, 32))
    assert outside.is_file()
    outside.unlink()


def test_real_resnet50_streams_default_to_torchvisions_v1_weights():
    """The published ImageNet-C (CoTTA, EATA, SAR) and Office (tllib, DANN, CDAN) numbers come from
    torchvision's V1 ResNet-50; timm's plain ``resnet50`` loads another network (RSB A1)."""
    from cladapt.streams.common import definitions

    d = definitions()
    for stream in ("imagenet-c", "imagenet-c-5k", "office31", "officehome"):
        assert d[stream]["defaults"]["model"] == "resnet50.tv_in1k", stream
