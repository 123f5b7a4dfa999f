"""cladapt's ``wrn-28-10`` and ``resnext-29-augmix`` against RobustBench's own classes: the
same parameter names and shapes, and the same outputs once RobustBench's weights are loaded.

    pip download robustbench==1.1 --no-deps -d /tmp/rb && python -m zipfile -e /tmp/rb/*.whl /tmp/rb
    python benchmarks/robustbench_parity.py /tmp/rb          # seconds; no network, no weights

Only the two architecture files are imported (``model_zoo/architectures/wide_resnet.py`` and
``resnext.py``; RobustBench's package itself needs more dependencies). RobustBench's randomly
initialised models are saved in its checkpoint format (``{"state_dict": ...}`` with DataParallel's
``module.`` prefix), loaded with ``cladapt.models.checkpoints.load_into`` into cladapt's models,
and both are run on the same batch in eval and train mode. Prints the largest output difference.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

from cladapt.models.checkpoints import load_into
from cladapt.models.robustbench import AugMixResNeXt, WideResNet


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(root: Path) -> None:
    arch = root / "robustbench" / "model_zoo" / "architectures"
    wrn = _module(arch / "wide_resnet.py", "rb_wide_resnet")
    rnx = _module(arch / "resnext.py", "rb_resnext")
    torch.manual_seed(0)
    theirs = {
        "wrn-28-10": (wrn.WideResNet(depth=28, widen_factor=10), WideResNet(28, 10, 10)),
        "resnext-29-augmix": (
            rnx.CifarResNeXt(rnx.ResNeXtBottleneck, 29, 4, 32, 100),
            AugMixResNeXt(29, 4, 32, 100),
        ),
    }
    x = torch.rand(8, 3, 32, 32)
    for name, (ref, ours) in theirs.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ckpt.pt"
            state = {f"module.{k}": v for k, v in ref.state_dict().items()}
            torch.save({"state_dict": state}, path)
            load_into(ours, path)
        # the AugMix ResNeXt normalises by 0.5 / 0.5 before RobustBench's CifarResNeXt
        inputs = (x - 0.5) / 0.5 if name.startswith("resnext") else x
        for mode in ("eval", "train"):
            ref.train(mode == "train")
            ours.train(mode == "train")
            with torch.no_grad():
                diff = (ref(inputs) - ours(x)).abs().max().item()
            print(f"{name} {mode}: {len(ref.state_dict())} tensors, max |diff| {diff:.2e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
