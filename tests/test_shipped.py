"""The embedded streams' models ship in the package: a fresh machine trains nothing, every machine
and thread count loads the same bytes, and a damaged file is a one-line error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from cladapt.errors import DataError
from cladapt.models import clip_pretrain, letters_pretrain, shipped
from cladapt.models.checkpoints import load_checkpoint, state_digest
from cladapt.results import read_results
from cladapt.runner import RunSpec, execute


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache, as on a machine that never ran cladapt."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLADAPT_CACHE", str(cache))
    return cache


def test_manifest_lists_every_shipped_file_with_its_digests():
    files = shipped.manifest()
    kinds = {key.split("/")[1].split("-")[0] for key in files}
    assert {"digits", "ecotta", "vida", "small", "clip"} <= kinds, kinds
    for key, entry in files.items():
        path = shipped.SHIPPED_DIR / key
        assert shipped.sha256_of(path) == entry["sha256"], key
        assert path.stat().st_size == entry["bytes"] < 16e6, key
        assert state_digest(load_checkpoint(path)[0]) == entry["weights_digest"], key


def test_the_default_pretrainings_resolve_to_shipped_files_without_training(
    fresh_cache, monkeypatch, catalog
):
    """mtil-mini's tiny CLIP and the letters trunk: the names the code computes now (recipe and
    code fingerprints) are the shipped names; when a change breaks this, rerun
    benchmarks/train_embedded_models.py."""

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped model was trained")

    # (the letters trunk's name hashes its training code, so its trainer is not patched: were it
    # not shipped, it would train for a minute and fail the checks below)
    monkeypatch.setattr(clip_pretrain, "pretrain", no_training)
    mini = catalog.streams.get("mtil-mini").factory()
    paths = [
        letters_pretrain.ensure_pretrained((3, 32, 32)),
        clip_pretrain.ensure_pretrained(mini.input_shape, tower="resnet"),
    ]
    assert all(shipped.SHIPPED_DIR in p.parents for p in paths), paths
    assert not any(fresh_cache.rglob("*.pt"))


def test_a_fresh_cache_runs_source_ecotta_and_vida_on_the_shipped_weights(fresh_cache, monkeypatch):
    from cladapt.manager import load_catalog
    from cladapt.models import source

    def no_training(*args, **kwargs):
        raise AssertionError("the shipped source model was retrained")

    monkeypatch.setattr(source, "train_source_model", no_training)
    catalog = load_catalog(["plugins_for_tests"])
    out = fresh_cache.parent / "r.csv"
    outcomes = {}
    for strategy, sets in (("source", {}), ("ecotta", {}), ("vida", {"augmentations": 2})):
        spec = RunSpec("test-digits-c3", strategy, sets=sets, out=out, device="cpu")
        outcomes[strategy] = execute(spec, catalog)
    assert outcomes["ecotta"].summary["warmed_up"] == 1
    assert outcomes["vida"].summary["source_trained_adapters"] == 1
    assert not list(fresh_cache.glob("models/*.pt"))  # nothing trained or warmed up here
    recorded = {json.loads(p)["source_model"] for p in read_results(out).params_json}
    source_files = [e for k, e in shipped.manifest().items() if k.startswith("models/digits")]
    assert recorded == {source_files[0]["weights_digest"]}


def test_source_error_is_the_same_on_one_and_two_threads(tmp_path, catalog):
    """digits-c's source model is shipped, and its evaluation does not depend on threads."""
    errors = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            spec = RunSpec("digits-c", "source", out=tmp_path / f"{n}.csv", device="cpu")
            errors.append(execute(spec, catalog).summary["mean_error"])
    finally:
        torch.set_num_threads(threads)
    assert errors[0] == errors[1]


def test_a_damaged_shipped_file_is_a_one_line_error(tmp_path, monkeypatch):
    key = next(k for k in shipped.manifest() if k.startswith("models/digits"))
    copy = tmp_path / "shipped"
    shutil.copytree(shipped.SHIPPED_DIR, copy)
    with open(copy / key, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    monkeypatch.setattr(shipped, "SHIPPED_DIR", copy)
    shipped._verified.cache_clear()
    try:
        with pytest.raises(DataError, match="do not match their SHA-256"):
            shipped.shipped_file(tmp_path / "models" / key.split("/")[1])
    finally:
        shipped._verified.cache_clear()
    assert (copy / key).is_file()  # reported, never deleted


def test_switched_off_shipped_weights_are_not_used(monkeypatch):
    key = next(iter(shipped.manifest()))
    monkeypatch.setenv(shipped.ENV, "0")
    assert shipped.shipped_file(shipped.SHIPPED_DIR.parent / key) is None


def test_digits_cs_vit_variant_and_its_vida_adapters_are_shipped(fresh_cache, monkeypatch):
    """ViDA's claim is judged on the tiny ViT (every published ViDA number is on a ViT): its
    source model (its own recipe, source_recipes) and ViDA's source-trained adapters on it ship,
    so a ViT run trains nothing."""
    from cladapt import source_stage
    from cladapt.manager import load_catalog
    from cladapt.models import source

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped model was trained")

    monkeypatch.setattr(source, "train_source_model", no_training)
    monkeypatch.setattr(source_stage, "_train", no_training)
    catalog = load_catalog()
    stream = catalog.streams.get("digits-c").factory(data_root=None, seed=0)
    recipe = source.source_recipe(stream, "tiny-vit")
    assert (recipe.epochs, recipe.lr) == (100, 2e-3)
    assert shipped.shipped_file(source.source_checkpoint_path(stream, "tiny-vit", recipe))
    out = fresh_cache.parent / "vit.csv"
    spec = RunSpec(
        "digits-shift", "vida", {"augmentations": "2"}, out=out, device="cpu", model="tiny-vit"
    )
    outcome = execute(spec, catalog)
    assert outcome.summary["source_trained_adapters"] == 1
    assert not list(fresh_cache.glob("models/*.pt"))
