"""Whether ViDA differs from bn-adapt, and which of its parts makes it differ.

    python benchmarks/vida_vs_bn.py [--stream digits-shift] [--seed 0]

Runs bn-adapt and ViDA on the same test batches and prints, per variant: the mean error, the
share of test images on which ViDA's scored prediction (the teacher's) equals bn-adapt's, how far
the teacher's and the student's weights moved from where test time started (relative L2
distance, at the end), and the adapters' output as a fraction of the adapted convolutions'
output (student, last batch).

The variants separate ViDA's two departures from a plain BN-adapted model:
- the target of the consistency loss. The official code (Yangsenqiao/vida ``cifar/vida.py``)
  takes the teacher's prediction on the clean batch; the teacher starts as a copy of the student
  and both see that batch, so the loss's gradient is zero up to rounding and the student never
  learns: ``pseudo_label=clean`` and no source stage is exactly bn-adapt. The paper's Fig. 2 has
  the teacher see an augmented view (``pseudo_label=augmented``, the default here).
- the source-trained adapters the official runs start from (released as checkpoints without
  their training code; ``source_epochs``, this harness's recipe): they change the model before
  test time, and HKA's uncertainty-dependent scales then change it per batch.
"""

from __future__ import annotations

import argparse

import torch

from cladapt.hookspecs import hookimpl
from cladapt.manager import load_catalog
from cladapt.runner import RunSpec, execute


class Capture:
    """Records the scored predictions of every test batch, and ViDA's internal state."""

    def __init__(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.adapter_ratio = float("nan")

    @hookimpl(hookwrapper=True)
    def cladapt_adapt(self, run, batch):
        outcome = yield
        self.preds.append(outcome.get_result().argmax(1).cpu())
        strategy = run.strategy
        if hasattr(strategy, "teacher") and any(
            "vida_" in n for n, _ in run.model.named_parameters()
        ):
            self.adapter_ratio = adapter_ratio(run.model, batch.x)


def adapter_ratio(model: torch.nn.Module, x: torch.Tensor) -> float:
    """||adapters' output|| / ||base conv output|| summed over the adapted layers (student)."""
    from cladapt.plugins.vida import _Adapted

    num, den = [0.0], [0.0]

    def hook(module, inputs, _out):
        (inp,) = inputs
        with torch.no_grad():
            low = module.vida_up_low(module.vida_down_low(inp)) * module.scale_low
            high = module.vida_up_high(module.vida_down_high(inp)) * module.scale_high
            num[0] += float((low + high).norm())
            den[0] += float(module.base(inp).norm())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _Adapted)]
    with torch.no_grad():
        was = model.training
        model(x)
        model.train(was)
    for h in handles:
        h.remove()
    return num[0] / max(den[0], 1e-12)


def relative_distance(state: dict, model: torch.nn.Module) -> float:
    num = den = 0.0
    for name, p in model.state_dict().items():
        if name in state and p.is_floating_point() and "vida_" not in name:
            num += float((p.float() - state[name].float()).norm() ** 2)
            den += float(state[name].float().norm() ** 2)
    return (num / max(den, 1e-12)) ** 0.5


def run(catalog, stream: str, strategy: str, seed: int, sets: dict) -> tuple[dict, Capture]:
    cap = Capture()
    outcome = execute(
        RunSpec(stream, strategy, sets=sets, seed=seed, out=None, run_plugins=(cap,)), catalog
    )
    return outcome, cap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="digits-shift")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    catalog = load_catalog()
    bn, bn_cap = run(catalog, args.stream, "bn-adapt", args.seed, {})
    bn_preds = torch.cat(bn_cap.preds)
    print(f"{args.stream}, seed {args.seed}: bn-adapt mean error {bn.summary['mean_error']:.2f} %")
    heads = ("error %", "same as bn", "teacher moved", "student moved", "adapters/base")
    print(f"{'variant':30s} " + "  ".join(heads))
    variants = {
        "clean target, no source stage": {"pseudo_label": "clean", "source_epochs": 0},
        "clean target, source adapters": {"pseudo_label": "clean"},
        "augmented target, no source": {"source_epochs": 0},
        "defaults (augmented + source)": {},
    }
    for label, sets in variants.items():
        outcome, cap = run(catalog, args.stream, "vida", args.seed, sets)
        strategy = outcome.run.strategy
        same = float((torch.cat(cap.preds) == bn_preds).float().mean()) * 100
        teacher = relative_distance(strategy.source_state, strategy.teacher)
        student = relative_distance(strategy.source_state, outcome.run.model)
        print(
            f"{label:30s} {outcome.summary['mean_error']:7.2f}  {same:9.1f} %  {teacher:13.2e}"
            f"  {student:13.2e}  {cap.adapter_ratio:13.2e}"
        )


if __name__ == "__main__":
    main()
