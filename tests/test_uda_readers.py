"""UDA streams from real on-disk layouts, written here in miniature."""

import struct

import numpy as np
import pytest
from PIL import Image

from cladapt.errors import DataError
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute

CLASSES = ["back_pack", "bike", "mug"]


def write_office(root, domains=("amazon", "webcam", "dslr"), per_class=2, nested=False):
    rng = np.random.default_rng(0)
    for d in domains:
        for c in CLASSES:
            folder = root / "office31" / d / ("images" if nested else "") / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"frame_{i:04d}.jpg")


def write_idx(path, array, magic_type=0x08):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", (magic_type << 8) | array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist_and_mnistm(root, n=12):
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    for split in ("train", "test"):
        folder = root / "mnist_m" / f"mnist_m_{split}"
        folder.mkdir(parents=True)
        lines = []
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(
                folder / f"{i:08d}.png"
            )
            lines.append(f"{i:08d}.png {i % 10}")
        (root / "mnist_m" / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("nested", [False, True])
def test_office_pair_stream_reads_the_folder_layout(catalog, tmp_path, nested):
    write_office(tmp_path, nested=nested)
    stream = catalog.streams.get("office31-A-W").factory(data_root=str(tmp_path))
    assert stream.class_names == CLASSES and stream.input_shape == (3, 224, 224)
    assert [e.name for e in stream.experiences] == ["W"]
    x, y = stream.experiences[0].test[0]
    assert tuple(x.shape) == (3, 224, 224) and y == 0
    assert len(stream.source.train) == 6
    multi = catalog.streams.get("office31-A").factory(data_root=str(tmp_path))
    assert sorted(e.name for e in multi.experiences) == ["D", "W"]


def test_office_pair_runs_dann_end_to_end(catalog, tmp_path, out):
    write_office(tmp_path)
    sets = {"iterations": "3", "iters_per_epoch": "3", "batch_size": "2", "eval_batch_size": "4"}
    spec = RunSpec(
        "office31-A-W",
        "dann",
        sets,
        out=out,
        device="cpu",
        model="small-cnn",
        data_root=str(tmp_path),
    )
    outcome = execute(spec, catalog)
    # Office's recipe: a 256-d bottleneck and tllib's DomainDiscriminator (1024-1024, BatchNorm)
    assert outcome.run.strategy.kind == "large-bn"
    assert outcome.run.model.bottleneck[0].out_features == 256
    df = read_results(out)
    assert {"target_accuracy", "target_error", "source_accuracy"} <= set(df.metric)


def test_office_missing_domain_is_a_one_line_error(catalog, tmp_path):
    write_office(tmp_path, domains=("amazon",))
    with pytest.raises(DataError, match=r"domain folder not found: .*office31/webcam"):
        catalog.streams.get("office31-A-W").factory(data_root=str(tmp_path))
    with pytest.raises(DataError, match="pass --data-root"):
        catalog.streams.get("office31-A-W").factory(data_root=None)


def test_office_class_mismatch_is_reported(catalog, tmp_path):
    write_office(tmp_path)
    (tmp_path / "office31" / "webcam" / "mug").rename(tmp_path / "office31" / "webcam" / "cup")
    with pytest.raises(DataError, match="class folders differ"):
        catalog.streams.get("office31-A-W").factory(data_root=str(tmp_path))


def test_mnist_to_mnistm_stream(catalog, tmp_path, out):
    write_mnist_and_mnistm(tmp_path)
    stream = catalog.streams.get("mnist-mnistm").factory(data_root=str(tmp_path))
    x, y = stream.source.train[3]
    assert tuple(x.shape) == (3, 32, 32) and y == 3
    xt, yt = stream.experiences[0].test[5]
    assert tuple(xt.shape) == (3, 32, 32) and yt == 5
    assert len(stream.experiences[0].unlabelled) == 12
    sets = {"epochs": "1", "batch_size": "4"}
    execute(
        RunSpec(
            "mnist-mnistm", "source-only", sets, out=out, device="cpu", data_root=str(tmp_path)
        ),
        catalog,
    )
    assert "target_error" in set(read_results(out).metric)


def test_missing_mnist_files_name_the_path(catalog, tmp_path):
    with pytest.raises(DataError, match=r"MNIST not found under .*MNIST/raw"):
        catalog.streams.get("mnist-mnistm").factory(data_root=str(tmp_path))
    (tmp_path / "MNIST").mkdir()
    write_mnist_and_mnistm(tmp_path / "other")
    with pytest.raises(DataError, match="MNIST"):
        catalog.streams.get("mnist-mnistm").factory(data_root=str(tmp_path))


def test_office_images_are_transformed_as_tllib_does():
    """tllib (resizing='default'): the image squashed to 256 x 256 by PIL's resize, then the
    central 224 x 224 for evaluation, a RandomResizedCrop(224, scale 0.08-1) + flip for training."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    from cladapt.data.folders import IMAGENET_MEAN, IMAGENET_STD, imagenet_transform

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    squashed = img.resize((256, 256))
    expected = TF.normalize(
        TF.to_tensor(squashed.crop((16, 16, 240, 240))), IMAGENET_MEAN, IMAGENET_STD
    )
    assert torch.allclose(imagenet_transform(224, train=False)(img), expected, atol=1e-6)
    train = imagenet_transform(224, train=True)
    torch.manual_seed(0)
    draws = [train(img) for _ in range(3)]
    assert all(d.shape == (3, 224, 224) for d in draws) and not torch.equal(draws[0], draws[1])
    crop = next(t for t in train.transforms if type(t).__name__ == "RandomResizedCrop")
    assert crop.scale == (0.08, 1.0)
