"""Train the models the embedded streams use, deterministically, and store them in the package.

    python benchmarks/train_embedded_models.py                # everything, ~17 min on one core
    python benchmarks/train_embedded_models.py --only clip    # one kind (names: see STEPS)

Makes, each with the recipe and code the harness would use at first use:
- the digits source CNN of digits-c / digits-shift (``small-cnn``, source ``digits-clean-v1``);
- EcoTTA's meta networks warmed up on that source model (EcoTTA's defaults);
- ViDA's adapters trained on the same source data (ViDA's defaults; digits-c and digits-shift
  share the source model, so one short digits-shift run makes them);
- the small CNN pre-trained on rendered letters (``small-cnn --pretrained``);
- the tiny CLIP pre-trained on mtil-mini's captions (``clip-tiny-rn``, mtil-mini's model);
- digits-c's ViT variant (``tiny-vit``, 100 epochs: ``source_recipes`` in the streams' TOML) and
  ViDA's adapters on it.

On one CPU thread with ``torch.use_deterministic_algorithms(True)``, CUDA hidden and every seed
fixed, in a fresh cache with the shipped files switched off; then copies the files into
``cladapt/models/shipped/<kind>/`` under the names the code looks them up by and writes
``manifest.json`` (SHA-256, bytes, weights digest, torch version). ``tests/test_shipped.py``
fails when a code or recipe change makes the code look for names that are not shipped: rerun
this script then, and regenerate the leaderboard rows that depend on the models.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, one thread: bit-for-bit the same training
os.environ["CLADAPT_SHIPPED_WEIGHTS"] = "0"
os.environ["OMP_NUM_THREADS"] = "1"
WORK = Path(tempfile.mkdtemp(prefix="cladapt-train-"))
os.environ["CLADAPT_CACHE"] = str(WORK)

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

from cladapt.models.checkpoints import load_checkpoint  # noqa: E402
from cladapt.models.shipped import MANIFEST, SHIPPED_DIR, sha256_of  # noqa: E402


def digest(path: Path) -> str:
    """The weights' digest as the rows record it (``source_model`` in ``params_json``)."""
    from cladapt.models.checkpoints import state_digest

    return state_digest(load_checkpoint(path)[0])


def steps(catalog) -> dict[str, object]:
    """What is shipped, by name, each made the way a first run would make it."""
    from cladapt.models import clip_pretrain, letters_pretrain
    from cladapt.runner import RunSpec, execute

    def run(stream: str, strategy: str, **spec) -> None:
        execute(RunSpec(stream, strategy, out=None, device="cpu", **spec), catalog)

    mini = catalog.streams.get("mtil-mini").factory()
    return {
        # the source model, then EcoTTA's warm-up on it (one digits-c run makes both)
        "digits": lambda: run("digits-c", "ecotta"),
        "vida": lambda: run("digits-shift", "vida"),
        # digits-c's ViT variant (ViDA's claim): its source model, then ViDA's adapters on it
        "vit": lambda: run("digits-shift", "vida", model="tiny-vit"),
        "letters": lambda: letters_pretrain.ensure_pretrained((3, 32, 32)),
        # mtil-mini's tower only: the ViT tower (``clip-tiny``, no stream's default) would add
        # 13.6 MB to the package and still trains at first use
        "clip": lambda: clip_pretrain.ensure_pretrained(mini.input_shape, tower="resnet"),
    }


def main() -> None:
    from cladapt.manager import load_catalog

    catalog = load_catalog()
    made = steps(catalog)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(made), help=f"comma-separated: {', '.join(made)}")
    args = ap.parse_args()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    for name in chosen:
        tic = time.perf_counter()
        made[name]()
        print(f"{name}: {time.perf_counter() - tic:.0f} s", flush=True)

    everything = set(chosen) == set(made)
    if everything and SHIPPED_DIR.exists():
        shutil.rmtree(SHIPPED_DIR)
    old = json.loads(MANIFEST.read_text())["files"] if MANIFEST.exists() else {}
    files = {} if everything else dict(old)
    for path in sorted(WORK.glob("*/*.pt")):
        if path.parent.name == "data":  # generated datasets are rebuilt, not shipped
            continue
        key = f"{path.parent.name}/{path.name}"
        stem = re.sub(r"-[0-9a-f]{16}\.pt$", "", path.name)
        model = load_checkpoint(path)[1].get("model")
        for earlier in list(files):  # the file this one replaces (another recipe's name)
            same = re.sub(r"-[0-9a-f]{16}\.pt$", "", earlier) == f"{path.parent.name}/{stem}"
            # ... for the same model (ViDA's adapters on the CNN and on the ViT share a stem)
            same = same and files[earlier].get("meta", {}).get("model") == model
            if same and earlier != key:
                (SHIPPED_DIR / earlier).unlink(missing_ok=True)
                del files[earlier]
        target = SHIPPED_DIR / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        files[key] = {
            "sha256": sha256_of(target),
            "bytes": target.stat().st_size,
            "weights_digest": digest(target),
            "meta": load_checkpoint(target)[1],
        }
    MANIFEST.write_text(
        json.dumps(
            {
                "made_by": "benchmarks/train_embedded_models.py",
                "torch": torch.__version__,
                "threads": 1,
                "deterministic_algorithms": True,
                "files": files,
            },
            indent=1,
            sort_keys=True,
            default=str,
        )
        + "\n"
    )
    total = sum(f["bytes"] for f in files.values())
    for key, f in files.items():
        print(f"{key}: {f['bytes'] / 1e6:.2f} MB, weights {f['weights_digest']}")
    print(f"{len(files)} files, {total / 1e6:.2f} MB in {SHIPPED_DIR}")
    shutil.rmtree(WORK)


if __name__ == "__main__":
    sys.exit(main())
