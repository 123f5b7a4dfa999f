"""Corruption streams: the released -C formats (written here in miniature), digits-c, and the
continual / episodic / gradual / mixed settings."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from cladapt.data.corruptions import CORRUPTIONS
from cladapt.errors import DataError
from cladapt.models.checkpoints import save_checkpoint
from cladapt.models.small_cnn import SmallCNN
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


def _write_cifar_c(root, per_severity=6, classes=10):
    d = root / "CIFAR-10-C"
    d.mkdir(parents=True)
    labels = np.tile(np.arange(per_severity) % classes, 5).astype(np.uint8)
    np.save(d / "labels.npy", labels)
    for i, name in enumerate(CORRUPTIONS):
        # severity s is encoded in the pixel values so the slicing can be checked
        images = np.concatenate(
            [np.full((per_severity, 32, 32, 3), 10 * s + i, np.uint8) for s in range(1, 6)]
        )
        np.save(d / f"{name}.npy", images)
    return d


def _sha8(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def _checkpoint(path, classes, size=32):
    save_checkpoint(path, SmallCNN(num_classes=classes).state_dict(), {"test": True})
    return str(path)


def test_cifar10_c_reader_slices_severities(tmp_path, catalog, out):

    _write_cifar_c(tmp_path)
    stream = catalog.streams.get("cifar10-c").factory(data_root=str(tmp_path))
    assert [e.name for e in stream.experiences] == list(CORRUPTIONS)
    x, y = stream.experiences[3].test.tensors
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 32, 32)
    assert int(x[0, 0, 0, 0]) == 10 * 5 + 3  # severity 5 rows of defocus_blur
    x2, _ = stream.experiences[3].at_severity(2).tensors
    assert int(x2[0, 0, 0, 0]) == 10 * 2 + 3
    assert "no CIFAR10" in stream.source_missing  # no clean CIFAR-10 here
    # the stream's default model is RobustBench's Standard WRN-28-10, and a checkpoint in
    # RobustBench's format ({"state_dict"}, DataParallel's "module." names) loads into it
    from cladapt.models.robustbench import WideResNet

    reference = WideResNet(28, 10, 10)
    ckpt = tmp_path / "Standard.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, ckpt)
    spec = RunSpec(
        "cifar10-c",
        "bn-adapt",
        {"batch_size": "4"},
        out=out,
        device="cpu",
        data_root=str(tmp_path),
        checkpoint=str(ckpt),
    )
    outcome = execute(spec, catalog)
    df = read_results(out)
    assert set(df.model) == {f"wrn-28-10@Standard.pt#{_sha8(ckpt)}"}
    assert len(df[(df.row_type == "eval") & (df.metric == "error")]) == 15
    assert 0 <= outcome.summary["mean_error"] <= 100


def test_cifar_c_missing_files_is_a_one_line_error(tmp_path, run_cli):
    r = run_cli(
        "run", "--stream", "cifar10-c", "--strategy", "source", "--data-root", str(tmp_path)
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "labels.npy not found" in r.stderr


def _write_imagenet_c(root, wnids=("n01440764", "n01443537"), per_class=3, severities=(5,)):
    d = root / "ImageNet-C"
    rng = np.random.default_rng(0)
    for name in CORRUPTIONS:
        for s in severities:
            for w in wnids:
                folder = d / name / str(s) / w
                folder.mkdir(parents=True)
                for k in range(per_class):
                    img = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
                    Image.fromarray(img).save(folder / f"ILSVRC2012_val_{k:08d}.JPEG")
    return d


def test_imagenet_c_folders_subset_and_end_to_end(tmp_path, catalog, out):
    d = _write_imagenet_c(tmp_path)
    full = catalog.streams.get("imagenet-c").factory(data_root=str(tmp_path))
    assert full.class_names == ["n01440764", "n01443537"] and len(full.experiences) == 15
    assert len(full.experiences[0].test) == 6 and full.normalization is not None
    x, y = full.experiences[0].test[0]
    assert x.shape == (3, 224, 224) and float(x.min()) >= 0 and float(x.max()) <= 1
    # RobustBench-style id list: the subset is exactly the listed files, for every corruption
    (d / "imagenet_test_image_ids.txt").write_text(
        "n01443537/ILSVRC2012_val_00000001.JPEG\nn01440764/ILSVRC2012_val_00000002.JPEG\n"
    )
    from cladapt.data.corruption_sets import imagenet_c

    sub = imagenet_c(d, "fog", 5, n_examples=2)
    files = sorted(sub.dataset.samples[i][0].split("/", 1)[1][-30:] for i in sub.indices)
    assert len(sub) == 2 and any("00000001" in f for f in files)
    ckpt = _checkpoint(tmp_path / "m.pt", 2)
    spec = RunSpec(
        "imagenet-c",
        "source",
        {"batch_size": "4"},
        out=out,
        device="cpu",
        data_root=str(tmp_path),
        model="small-cnn",
        checkpoint=ckpt,
    )
    execute(spec, catalog)
    df = read_results(out)
    assert set(df[df.row_type == "eval"].eval_experience) == set(CORRUPTIONS)


def test_imagenet_c_without_source_needs_pretrained_or_checkpoint(tmp_path, run_cli):
    _write_imagenet_c(tmp_path, per_class=1)
    r = run_cli(
        "run",
        "--stream",
        "imagenet-c",
        "--strategy",
        "source",
        "--model",
        "small-cnn",
        "--data-root",
        str(tmp_path),
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--pretrained" in r.stderr and "--checkpoint" in r.stderr


def test_digits_c_is_deterministic_and_has_every_severity():
    from cladapt.data.corruption_sets import digits_c

    a = digits_c("shot_noise", 5).tensors[0]
    assert a.shape == (540, 3, 32, 32)
    digits_c.cache_clear()
    assert torch.equal(a, digits_c("shot_noise", 5).tensors[0])
    d1 = (digits_c("shot_noise", 1).tensors[0] - a).abs().mean()
    assert d1 > 0


@pytest.fixture(scope="module")
def c3_catalog():
    from cladapt.manager import load_catalog

    return load_catalog(["plugins_for_tests"])


@pytest.mark.parametrize(
    "setting,n_rows,labels",
    [("gradual", 3 * 9, "gaussian_noise@1"), ("mixed", 3, "shot_noise"), ("episodic", 3, "fog")],
)
def test_settings_write_expected_rows(setting, n_rows, labels, c3_catalog, out):
    spec = RunSpec(
        "test-digits-c3", "bn-adapt", {"batch_size": "128"}, out=out, device="cpu", setting=setting
    )
    execute(spec, c3_catalog)
    df = read_results(out)
    ev = df[(df.row_type == "eval") & (df.metric == "error")]
    assert len(ev) == n_rows and labels in set(ev.eval_experience)
    assert set(df.setting) == {setting}


def test_gradual_setting_rejects_streams_without_severities(catalog, out):
    from cladapt.errors import CladaptError

    with pytest.raises(CladaptError, match="setting"):
        execute(
            RunSpec("digits-shift", "source", out=out, device="cpu", setting="gradual"), catalog
        )


def test_mixed_setting_scores_each_domain_like_the_sequential_run_for_source(c3_catalog, out):
    """Without adaptation the order cannot matter: mixed == continual, domain by domain."""
    name = "test-digits-c3"
    mixed = execute(RunSpec(name, "source", out=out, device="cpu", setting="mixed"), c3_catalog)
    seq = execute(RunSpec(name, "source", out=out, device="cpu"), c3_catalog)
    for k, v in seq.result.tables["errors"].items():
        assert mixed.result.tables["errors"][k] == pytest.approx(v, abs=1e-6)


def test_missing_imagenet_c_dir_is_a_data_error(tmp_path, catalog):
    with pytest.raises(DataError, match="gaussian_noise/5"):
        catalog.streams.get("imagenet-c").factory(data_root=str(tmp_path))


def test_imagenet_c_runs_each_method_at_its_official_imagenet_settings(tmp_path, catalog):
    """EATA / SAR / Tent at SGD 2.5e-4 (batch 64), EATA's d_margin 0.05 and Fisher weight 2000,
    CoTTA's ImageNet threshold and restore rate, ViDA's SGD 5e-7 / 2e-7 and threshold 0.2:
    per-strategy stream settings, under --set."""
    from cladapt.planning import effective_values, plan

    _write_imagenet_c(tmp_path, per_class=1)
    ckpt = _checkpoint(tmp_path / "m.pt", 2)

    def planned(stream, strategy, sets=None):
        spec = RunSpec(stream, strategy, sets or {}, out=None, device="cpu", model="small-cnn")
        if stream.startswith("imagenet"):
            spec = dataclasses.replace(spec, data_root=str(tmp_path), checkpoint=ckpt)
        return plan(spec, catalog)

    eata = planned("imagenet-c", "eata").layered.strategy
    assert (eata.optimizer, eata.lr, eata.d_margin, eata.fisher_alpha) == (
        "sgd",
        2.5e-4,
        0.05,
        2000,
    )
    assert planned("imagenet-c-5k", "sar").layered.strategy.lr == 2.5e-4
    tent = planned("imagenet-c", "tent").layered.strategy
    assert (tent.optimizer, tent.lr) == ("sgd", 2.5e-4)
    cotta = planned("imagenet-c", "cotta").layered.strategy
    assert (cotta.confidence_threshold, cotta.restore_prob) == (0.1, 0.001)
    vida = planned("imagenet-c-5k", "vida").layered.strategy
    assert (vida.optimizer, vida.lr, vida.adapter_lr, vida.uncertainty_threshold) == (
        "sgd",
        5e-7,
        2e-7,
        0.2,
    )
    assert planned("digits-c", "vida").layered.strategy.optimizer == "adam"  # official CIFAR
    # the CIFAR-style defaults stay elsewhere; --set still wins; describe says where each is from
    assert planned("digits-c", "eata").layered.strategy.lr == 1e-3
    assert planned("imagenet-c", "eata", {"lr": "1e-4"}).layered.strategy.lr == 1e-4
    sources = {(g, k): src for g, k, _, src in effective_values(planned("imagenet-c", "eata"))}
    assert sources[("strategy eata", "d_margin")].startswith("stream imagenet-c: mr-eggplant/EATA")
    assert sources[("strategy eata", "entropy_margin")] == "default"


def test_robustbench_checkpoints_load_by_their_own_parameter_names(tmp_path):
    """wrn-28-10 / resnext-29-augmix keep RobustBench's names (a randomly initialised model saved
    as RobustBench saves it loads strictly, and computes the same function); the AugMix ResNeXt's
    normalisation constants are not in its released checkpoint and need not be."""
    from cladapt.models.checkpoints import load_into
    from cladapt.models.robustbench import AugMixResNeXt, WideResNet

    wrn = WideResNet(28, 10, 10)
    assert sum(p.numel() for p in wrn.parameters()) == 36_479_194  # WRN-28-10 on CIFAR-10
    assert {
        "block1.layer.0.convShortcut.weight",
        "block2.layer.3.bn2.running_var",
        "fc.bias",
    } <= set(wrn.state_dict())
    rnx = AugMixResNeXt(29, 4, 32, 100)
    assert "mu" not in rnx.state_dict() and "stage_3.2.conv_expand.weight" in rnx.state_dict()
    assert tuple(rnx.state_dict()["stage_1.0.conv_conv.weight"].shape) == (128, 32, 3, 3)
    x = torch.rand(2, 3, 32, 32)
    for make in (lambda: WideResNet(28, 10, 10), lambda: AugMixResNeXt(29, 4, 32, 100)):
        torch.manual_seed(0)
        saved = make().eval()
        path = tmp_path / "ckpt.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in saved.state_dict().items()}}, path)
        torch.manual_seed(1)
        fresh = make().eval()
        load_into(fresh, path)
        with torch.no_grad():
            assert torch.equal(fresh(x), saved(x))


def test_every_per_strategy_stream_setting_names_a_strategy_and_its_parameters(catalog):
    """A typo in a stream's strategy_defaults (a strategy name or a parameter) would silently
    never apply: every built-in one names a registered strategy and parameters it has."""
    from cladapt.streams.common import definitions

    from cladapt.protocols import PROTOCOLS

    seen = 0
    for name, d in definitions().items():
        protocol = PROTOCOLS[d["protocol"]].Config.__dataclass_fields__
        for strategy, values in d.get("strategy_defaults", {}).items():
            fields = set(catalog.strategies.get(strategy).factory.Config.__dataclass_fields__)
            assert set(values) <= fields | set(protocol), (name, strategy, values)
            seen += 1
    assert seen >= 10  # imagenet-c(-5k): 4 each; office31: 2; officehome: 2
