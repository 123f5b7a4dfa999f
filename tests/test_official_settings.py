"""Each method at its official code's settings on the streams those settings belong to, read the
way ``cladapt describe STRATEGY --stream S`` reads them: from the stream's definition, with no data
on the machine. Sources: qinenergy/cotta (``imagenet/cfgs/10orders``, ``cifar/cfgs/cifar100``),
Yangsenqiao/vida (``imagenet/cfgs/vit/vida.yaml``, CIFAR-100 config), mr-eggplant/EATA and the
peer benchmark mariodoebler/test-time-adaptation (``cfgs/cifar100_c/eata.yaml``), tllib
(``dann.py``'s ``DomainDiscriminator``, ``mcc.py``'s defaults), google-deepmind/dm_nevis
(``augmentations.normalize``, the validation-split list)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cladapt.planning import definition_values
from cladapt.runner import RunSpec


def _values(catalog, stream: str, strategy: str, sets: dict | None = None) -> dict:
    """{parameter: (value, source)} of a run that was never planned against data."""
    _, rows = definition_values(RunSpec(stream, strategy, sets or {}, out=None), catalog)
    return {key: (value, source) for _, key, value, source in rows}


def _value(catalog, stream, strategy, key):
    return _values(catalog, stream, strategy)[key][0]


@pytest.mark.parametrize("stream", ["imagenet-c", "imagenet-c-5k"])
def test_cotta_on_imagenet_c_runs_sgd_nesterov_and_the_symmetric_loss(stream, catalog):
    values = _values(catalog, stream, "cotta")
    assert {k: values[k][0] for k in ("optimizer", "lr", "loss")} == {
        "optimizer": "sgd",
        "lr": 0.01,
        "loss": "symmetric-ce",
    }
    assert (values["confidence_threshold"][0], values["restore_prob"][0]) == (0.1, 0.001)
    assert "qinenergy/cotta" in values["loss"][1]  # describe names the source file
    # the CIFAR settings stay the defaults elsewhere
    digits = _values(catalog, "digits-c", "cotta")
    assert (digits["optimizer"][0], digits["loss"][0]) == ("adam", "soft-ce")


def test_cotta_sgd_is_nesterov_as_its_imagenet_setup_optimizer(catalog):
    from test_tta_strategies import _fake_run, _model_with_source_stats, _strategy

    run = _fake_run(_model_with_source_stats())
    _strategy(catalog, "cotta", optimizer="sgd", lr=0.01).cladapt_setup(run=run)
    group = run.optimizer.param_groups[0]
    assert isinstance(run.optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.01, 0.9, True)


def test_symmetric_cross_entropy_is_half_each_direction_and_its_second_half_moves_the_student():
    """-0.5 sum p_t log p_s - 0.5 sum p_s log p_t (imagenet/cotta.py softmax_entropy). With
    student == teacher the soft cross-entropy has no gradient; the symmetric one does."""
    from cladapt.adaptation import symmetric_cross_entropy

    torch.manual_seed(0)
    s, t = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    ps, pt = s.softmax(1), t.softmax(1)
    expected = -0.5 * (pt * ps.log()).sum(1) - 0.5 * (ps * pt.log()).sum(1)
    assert torch.allclose(symmetric_cross_entropy(s, t).double(), expected, atol=1e-6)
    same = torch.randn(6, 5, requires_grad=True)
    symmetric_cross_entropy(same, same.detach().clone()).mean().backward()
    assert same.grad.abs().max() > 1e-3
    soft = torch.randn(6, 5, requires_grad=True)
    (-(soft.detach().softmax(1) * soft.log_softmax(1)).sum(1)).mean().backward()
    assert soft.grad.abs().max() < 1e-6


def test_cifar100_c_uses_the_cifar100_configs(catalog):
    assert _value(catalog, "cifar100-c", "cotta", "confidence_threshold") == 0.72
    assert _value(catalog, "cifar10-c", "cotta", "confidence_threshold") == 0.92
    assert _value(catalog, "cifar100-c", "eata", "d_margin") == 0.1
    vida = _values(catalog, "cifar100-c", "vida")
    assert (vida["lr"][0], vida["adapter_lr"][0], vida["batch_size"][0]) == (3e-4, 1e-6, 50)


@pytest.mark.parametrize("stream", ["imagenet-c", "imagenet-c-5k"])
def test_vida_on_imagenet_c_runs_the_official_vit_config(stream, catalog):
    """imagenet/cfgs/vit/vida.yaml: SGD 5e-7 / adapters 2e-7, batch 50, MT_ViDA 0.8, symmetric
    CE against the clean batch's teacher prediction."""
    vida = {k: v for k, (v, _) in _values(catalog, stream, "vida").items()}
    assert {
        k: vida[k]
        for k in ("optimizer", "lr", "adapter_lr", "ema_adapters", "loss", "pseudo_label")
    } == {
        "optimizer": "sgd",
        "lr": 5e-7,
        "adapter_lr": 2e-7,
        "ema_adapters": 0.8,
        "loss": "symmetric-ce",
        "pseudo_label": "clean",
    }
    assert vida["batch_size"] == 50
    assert _value(catalog, "digits-c", "vida", "ema_adapters") == 0.999


def test_tent_sgd_is_nesterov_by_default(catalog):
    from test_tta_strategies import _fake_run, _model_with_source_stats, _strategy

    assert _value(catalog, "imagenet-c", "tent", "optimizer") == "sgd"
    assert _value(catalog, "imagenet-c", "tent", "nesterov") is True
    run = _fake_run(_model_with_source_stats())
    _strategy(catalog, "tent", optimizer="sgd", lr=2.5e-4).cladapt_setup(run=run)
    assert run.optimizer.param_groups[0]["nesterov"] is True
    run = _fake_run(_model_with_source_stats())
    _strategy(catalog, "tent", optimizer="sgd", nesterov=False).cladapt_setup(run=run)
    assert run.optimizer.param_groups[0]["nesterov"] is False


@pytest.mark.parametrize("suite", ["office31", "officehome"])
def test_office_discriminator_and_mcc_follow_tllib(suite, catalog):
    stream = f"{suite}-A-W" if suite == "office31" else f"{suite}-Ar-Cl"
    for method in ("dann", "cdan"):
        assert _value(catalog, stream, method, "domain_head") == "large-bn"
    mcc = _values(catalog, stream, "mcc")
    assert (mcc["lr"][0], mcc["batch_size"][0]) == (0.005, 36)
    assert "mcc.py" in mcc["lr"][1]
    assert _value(catalog, stream, "cdan", "entropy_conditioning") is True  # CDAN+E
    assert _value(catalog, "digits-uda", "dann", "domain_head") == "auto"


def _image_folder(root: Path, classes=("a", "b"), per_class=2, size=40) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            img = rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{k}.JPEG")
    return root


def test_eata_takes_clean_fisher_images_from_a_folder_and_says_when_it_ran_as_eta(
    catalog, tmp_path
):
    from types import SimpleNamespace

    eata_cls = catalog.strategies.get("eata").factory
    no_source = SimpleNamespace(source=None)
    plain = eata_cls.Config()
    assert eata_cls.configuration_facts(no_source, plain) == ["fisher=none (ETA)"]
    with_folder = eata_cls.Config(fisher_data=str(_image_folder(tmp_path / "val")))
    assert eata_cls.configuration_facts(no_source, with_folder) == []
    from cladapt.data.folders import evaluation_images

    images = evaluation_images(with_folder.fisher_data, 32, "fisher_data")
    x, _ = images[0]
    assert len(images) == 4 and tuple(x.shape) == (3, 32, 32)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_sar_recovery_keeps_the_base_sgd_momentum(catalog):
    """mr-eggplant/SAR: the recovery reloads SAM's state (``optimizer.load_state_dict``), and
    the base SGD's momentum buffers live in ``base_optimizer.state``, which survives it."""
    from test_tta_strategies import _fake_run, _model_with_source_stats, _strategy

    from cladapt.batch import Batch

    torch.manual_seed(0)
    run = _fake_run(_model_with_source_stats())
    # every sample reliable, every step recovers
    sar = _strategy(catalog, "sar", reset_em=100.0, entropy_margin=10.0)
    sar.cladapt_setup(run=run)
    x = torch.rand(16, 3, 32, 32)
    sar.cladapt_adapt(run=run, batch=Batch(x=x))
    base = run.optimizer.base_optimizer if hasattr(run.optimizer, "base_optimizer") else None
    state = base.state if base is not None else run.optimizer.state
    buffers = [s.get("momentum_buffer") for s in state.values()]
    assert buffers and all(b is not None for b in buffers)
    before = [b.clone() for b in buffers]
    sar.cladapt_adapt(run=run, batch=Batch(x=x))
    after = [s.get("momentum_buffer") for s in state.values()]
    assert all(a is not None for a in after)
    assert sar.recoveries == 2
    # same weights (recovered), same batch, same gradient: only kept momentum changes the buffer
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_imagenet_c_offers_robustbench_preprocessing_and_cottas_ten_orders(catalog, tmp_path):
    from cladapt.streams.corruptions import COTTA_ORDERS
    from test_corruption_streams import _write_imagenet_c

    _write_imagenet_c(tmp_path, per_class=1)
    # a non-square image shows the difference: crop224 centre-crops, res256crop224 resizes first
    factory = catalog.streams.get("imagenet-c").factory
    standard = factory(data_root=str(tmp_path))
    assert standard.facts["preprocess"] == "crop224"
    assert [e.name.split("-")[0] for e in standard.experiences][0] == "gaussian_noise"
    for seed in (0, 9):
        ordered = factory(data_root=str(tmp_path), seed=seed, corruption_order="cotta10")
        names = [e.metadata.get("corruption", e.name) for e in ordered.experiences]
        assert [n for n in names] == COTTA_ORDERS[seed].split() or all(
            n.startswith(c) for n, c in zip(names, COTTA_ORDERS[seed].split(), strict=True)
        )
        assert ordered.facts["corruption_order"] == f"cotta10 #{seed}"
    assert COTTA_ORDERS[0].split()[:3] == ["brightness", "pixelate", "gaussian_noise"]
    resized = factory(data_root=str(tmp_path), preprocess="res256crop224")
    a, _ = standard.experiences[0].test[0]
    b, _ = resized.experiences[0].test[0]
    assert a.shape == b.shape == (3, 224, 224) and not torch.equal(a, b)
    from cladapt.errors import DataError

    with pytest.raises(DataError, match="expected standard or cotta10"):
        factory(data_root=str(tmp_path), corruption_order="random")


def test_a_bare_weights_file_for_an_openai_architecture_must_say_its_activation(tmp_path):
    """open_clip builds ViT-B-16 with nn.GELU; OpenAI's weights need QuickGELU. A state dict does
    not say which it was trained with, so it is refused unless the model name says."""
    from cladapt.errors import DataError
    from cladapt.models.clip import _check_activation_is_known

    with pytest.raises(DataError, match="ViT-B-16-quickgelu"):
        _check_activation_is_known("ViT-B-16", "ViT-B-16")
    _check_activation_is_known("ViT-B-16-quickgelu", "ViT-B-16-quickgelu")
    _check_activation_is_known("open_clip:ViT-B-16", "ViT-B-16")


def test_nevis_images_reach_the_model_in_minus_one_to_one_and_pcam_uses_its_validation_split():
    from cladapt.streams.nevis import DM_NEVIS_RANGE

    from cladapt.data.nevis import VALIDATION_KEYS, VALIDATION_SPLIT
    from cladapt.models.factory import Normalized

    mean, std = DM_NEVIS_RANGE
    wrap = Normalized(torch.nn.Identity(), mean, std)
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    assert wrap(x)[0, 0, 0].tolist() == [-1.0, 0.0, 1.0]
    assert {"DTD", "Flowers102", "PCAM"} <= set(VALIDATION_SPLIT)
    assert {"sun397", "patch_camelyon"} <= VALIDATION_KEYS
