"""Scenario builders (class splits, rotated domains) on generated files, models by name."""

import numpy as np
import pytest
import torch
from PIL import Image

from cladapt.errors import ConfigError, DataError
from cladapt.models.factory import create_model
from cladapt.runner import RunSpec, execute


def test_split_mnist_has_seeded_class_order_and_contiguous_labels(catalog, tmp_path):
    from test_uda_readers import write_mnist_and_mnistm

    write_mnist_and_mnistm(tmp_path, n=40)
    stream = catalog.streams.get("split-mnist").factory(data_root=str(tmp_path))
    assert len(stream.experiences) == 5 and stream.input_shape == (3, 32, 32)
    order = [int(n.split()[0]) for n in stream.class_names]  # torchvision names: "7 - seven"
    # iCaRL's order: numpy's seed-1993 permutation (computed here independently of the code)
    assert order == np.random.RandomState(1993).permutation(10).tolist()
    assert stream.facts["classes"] == order and stream.facts["class_order"] == "icarl"
    again = catalog.streams.get("split-mnist").factory(data_root=str(tmp_path), seed=7)
    assert again.class_names == stream.class_names  # the order does not depend on the run seed
    for t, e in enumerate(stream.experiences):
        assert e.classes == [2 * t, 2 * t + 1]
        labels = {e.train[i][1] for i in range(len(e.train))}
        assert labels == set(e.classes)
        # the images are those of the original classes the new ids stand for
        subset = e.train.ds
        original_labels = {int(subset.dataset.targets[i]) for i in subset.indices}
        assert original_labels == {order[c] for c in e.classes}
        assert len(e.train) == 40 // 10 * 2
    x, _ = stream.experiences[0].test[0]
    assert tuple(x.shape) == (3, 32, 32)


def write_class_folders(root, classes, per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.jpg"
                )


def test_split_imagefolder_runs_task_incremental(catalog, tmp_path, out):
    write_class_folders(tmp_path, [f"c{i}" for i in range(10)])
    stream = catalog.streams.get("split-imagefolder").factory(data_root=str(tmp_path))
    assert [len(e.test) for e in stream.experiences] == [6] * 5
    spec = RunSpec(
        "split-imagefolder",
        "finetune",
        {"epochs": "1", "batch_size": "4"},
        out=out,
        device="cpu",
        data_root=str(tmp_path),
        setting="task-incremental",
    )
    assert execute(spec, catalog).result.tables["accuracy_matrix"].shape == (6, 5)
    with pytest.raises(DataError, match="missing .*/train"):
        catalog.streams.get("split-imagefolder").factory(data_root=str(tmp_path / "empty"))


def test_uneven_class_split_is_an_error(catalog, tmp_path):
    write_class_folders(tmp_path, ["a", "b", "c"])
    with pytest.raises(DataError, match="3 classes do not split into 5 equal tasks"):
        catalog.streams.get("split-imagefolder").factory(data_root=str(tmp_path))


def test_rotated_domains_share_labels_and_rotate(catalog):
    stream = catalog.streams.get("digits-rotated").factory()
    assert [e.name for e in stream.experiences] == ["rot0", "rot45", "rot90", "rot135", "rot180"]
    x0, y0 = stream.experiences[0].test.tensors
    x180, y180 = stream.experiences[-1].test.tensors
    assert torch.equal(y0, y180)
    assert torch.allclose(x180, torch.flip(x0, dims=(-2, -1)), atol=1e-5)
    assert not torch.allclose(stream.experiences[2].test.tensors[0], x0)
    assert stream.settings == ("domain-incremental",)


def test_download_is_refused_by_streams_that_cannot(catalog, out):
    with pytest.raises(ConfigError, match="cannot download"):
        execute(RunSpec("digits", "finetune", out=out, device="cpu", download=True), catalog)


def test_tiny_vit_is_timm_style_and_trains(catalog, out):
    model = create_model(catalog.models, "tiny-vit", 10, (3, 32, 32))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10) and model.num_features == 96
    outcome = execute(
        RunSpec("digits", "nmc", {"epochs": "1"}, out=out, device="cpu", model="tiny-vit"), catalog
    )
    assert outcome.summary["inference_flops"] > 0


def test_pretrained_weights_offline_name_the_way_out(catalog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="not available offline.*--checkpoint"):
        create_model(catalog.models, "resnet18", 10, (3, 32, 32), pretrained=True)


def test_split_cifar100_in_icarls_order_at_a_chosen_image_size(catalog, tmp_path, out):
    """Split CIFAR-100 through the CLI's --set: iCaRL's class order (the published seed-1993
    order: 68, 56, 78, 8, 23, ...) with torchvision's real CIFAR-100 names, images resized for a
    ViT, and the order recorded in params_json; the simple-baseline paper's code uses its own
    order (87, 0, 52, ...), class_order=janson2022."""
    import json

    from mtil_fakes import RAW_NAMES, cifar100

    from cladapt.results import read_results

    cifar100(tmp_path)
    stream = catalog.streams.get("split-cifar100").factory(data_root=str(tmp_path))
    assert stream.facts["classes"][:5] == [68, 56, 78, 8, 23]
    janson = catalog.streams.get("split-cifar100").factory(
        data_root=str(tmp_path), class_order="janson2022"
    )
    assert janson.facts["classes"][:5] == [87, 0, 52, 58, 44]
    assert sorted(janson.facts["classes"]) == list(range(100))
    names = RAW_NAMES["CIFAR100"]
    assert stream.class_names[:3] == [names[68], names[56], names[78]]  # e.g. 'road', 'pine_tree'
    spec = RunSpec(
        "split-cifar100",
        "nmc",
        {"image_size": "64"},
        out=out,
        device="cpu",
        model="tiny-vit",
        data_root=str(tmp_path),
    )
    outcome = execute(spec, catalog)
    assert outcome.run.stream.input_shape == (3, 64, 64)
    params = json.loads(read_results(out).params_json.iloc[-1])
    assert params["stream"]["image_size"] == 64 and params["stream"]["classes"][0] == 68
    sorted_order = execute(
        RunSpec(
            "split-cifar100",
            "nmc",
            {"class_order": "sorted"},
            out=out,
            device="cpu",
            data_root=str(tmp_path),
        ),
        catalog,
    )
    assert sorted_order.run.stream.facts["classes"] == list(range(100))


def test_stream_options_are_refused_where_they_do_not_apply(catalog, out, tmp_path):
    with pytest.raises(ConfigError, match="does not take --set image_size.*split-cifar100"):
        execute(RunSpec("digits", "finetune", {"image_size": "64"}, out=out), catalog)
    from mtil_fakes import cifar100

    cifar100(tmp_path)
    with pytest.raises(ConfigError, match="class_order 'random'"):
        execute(
            RunSpec("split-cifar100", "nmc", {"class_order": "random"}, data_root=str(tmp_path)),
            catalog,
        )


def test_pretrained_timm_models_get_their_own_input_normalisation():
    """Split streams give images in [0, 1]; a model with pretrained weights must see them
    normalised as it was trained (AugReg ViTs: mean = std = 0.5; ResNets: ImageNet's)."""
    import timm

    from cladapt.models.factory import Normalized
    from cladapt.runner import pretrained_normalization

    vit = timm.create_model("vit_tiny_patch16_224.augreg_in21k", pretrained=False, img_size=64)
    wrapped = pretrained_normalization(vit)
    assert isinstance(wrapped, Normalized)
    assert wrapped.mean.flatten().tolist() == pytest.approx(list(vit.pretrained_cfg["mean"]))
    assert wrapped.std.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), vit((x - 0.5) / 0.5))
    plain = torch.nn.Linear(2, 2)
    assert pretrained_normalization(plain) is plain


def test_split_streams_can_feed_a_pretrained_model_raw_pixels(catalog, tmp_path):
    """The simple-baseline paper's code feeds its pretrained ViT raw [0, 1] inputs:
    input_normalization=none keeps them so (recorded in the stream's facts); the default
    normalises with the weights' mean / std; anything else is refused."""
    from mtil_fakes import cifar100

    cifar100(tmp_path)
    factory = catalog.streams.get("split-cifar100").factory
    default = factory(data_root=str(tmp_path))
    raw = factory(data_root=str(tmp_path), input_normalization="none")
    assert default.normalize_for_pretrained and "input_normalization" not in default.facts
    assert not raw.normalize_for_pretrained and raw.facts["input_normalization"] == "none"
    with pytest.raises(ConfigError, match="expected pretrained or none"):
        factory(data_root=str(tmp_path), input_normalization="imagenet")
