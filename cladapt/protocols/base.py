"""Pieces every protocol shares: one optimizer step, evaluation, divergence checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from cladapt.batch import Batch, StepOutput
from cladapt.context import Run
from cladapt.data.batching import iterate, num_batches
from cladapt.errors import DivergenceError
from cladapt.flops import FlopMeter, counted
from cladapt.results import Record
from cladapt.stream import Experience

# parameters whose norm grows more than this since setup have diverged (test-time adaptation
# changes a source model slightly: Tent's affine parameters move by a few percent)
PARAMETER_GROWTH = 1e3


@dataclass
class ProtocolResult:
    """Headline metrics (recorded as summary rows) and extra facts for the final table."""

    headline: dict[str, float]
    tables: dict[str, Any] = field(default_factory=dict)


class Protocol:
    name: ClassVar[str]
    Config: ClassVar[type]

    def run(self, run: Run) -> ProtocolResult:
        raise NotImplementedError


def train_step(
    run: Run, batch: Batch, check_every: int, meter: FlopMeter | None = None
) -> StepOutput | None:
    """One step: strategy loss + extra losses, backward, optimizer step, after_step.

    Non-finite losses are accumulated on the device and checked every ``check_every`` steps, so
    the hot loop does not synchronise with the GPU on every batch. With a ``meter`` that wants a
    sample, this step's forward and backward FLOPs are counted.
    """
    if meter is not None:
        meter.add(len(batch))
        if meter.wants_sample:
            out, flops = counted(lambda: _train_step(run, batch, check_every))
            meter.sample(flops, len(batch))
            return out
    return _train_step(run, batch, check_every)


def _train_step(run: Run, batch: Batch, check_every: int) -> StepOutput | None:
    with run.autocast():
        out = run.hook.cladapt_train_step(run=run, batch=batch)
        if out is None:
            return None
        extras = [
            e
            for e in run.hook.cladapt_extra_losses(run=run, batch=batch, outputs=out)
            if e is not None
        ]
    loss = out.loss
    if extras:
        extra = torch.stack([e.float() for e in extras]).sum()
        loss = extra if loss is None else loss + extra
    run.images_seen += len(batch)
    if loss is None:
        return out
    if run.optimizer is None:
        raise DivergenceError(
            f"strategy {run.strategy.name!r} returned a loss but set no run.optimizer in setup"
        )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.step += 1
    flag_nonfinite(run, loss)
    out.loss = loss
    run.hook.cladapt_after_step(run=run, outputs=out)
    if run.step % check_every == 0:
        check_finite(run)
    return out


def check_finite(run: Run, parameters: bool = False) -> None:
    """Raise DivergenceError if a loss or scored logit flagged since the last check was NaN/inf
    (one host sync), or, with ``parameters``, if any model parameter is: a diverged run must
    stop with an error row, never be scored."""
    bad = run.state.pop("_nonfinite", None)
    where = run.experience.name if run.experience else "?"
    if bad is not None and bool(bad):
        if run.optimizer is None:  # nothing trains: the weights themselves (or the data) are
            raise DivergenceError(
                f"the model's outputs are NaN/inf (experience {where!r}) and nothing is trained: "
                "check the model's weights (e.g. the --checkpoint) and the data"
            )
        raise DivergenceError(
            f"loss became NaN/inf (or the outputs did) by step {run.step} (experience {where!r}); "
            "lower the learning rate, e.g. --set lr=..."
        )
    if parameters and run.model is not None:
        finite = [torch.isfinite(p).all() for p in run.model.parameters()]
        if finite and not bool(torch.stack(finite).all()):
            raise DivergenceError(
                f"model parameters became NaN/inf during experience {where!r}; "
                "lower the learning rate, e.g. --set lr=..."
            )
        start = run.state.get("_param_norm0")
        if start is not None:
            now = torch.stack([p.detach().float().norm() for p in run.model.parameters()]).norm()
            if float(now) > PARAMETER_GROWTH * max(float(start), 1e-12):
                raise DivergenceError(
                    f"model parameters grew from norm {float(start):.3g} to {float(now):.3g} "
                    f"during experience {where!r} (more than {PARAMETER_GROWTH:.0e}x): the run "
                    "diverged; lower the learning rate, e.g. --set lr=..."
                )


def checked_logits(run: Run, logits: object, n: int) -> torch.Tensor:
    """The strategy's logits for a batch of ``n`` images, refused unless shaped ``(n, classes)``
    (a ``[1, C]`` tensor would broadcast against the labels and be scored); NaN/inf is flagged
    for the next :func:`check_finite`."""
    want = (n, run.stream.num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise DivergenceError(
            f"strategy {run.strategy.name!r} returned logits of shape {got} for a batch of {n} "
            f"images; expected {want} (batch, classes)"
        )
    flag_nonfinite(run, logits)
    return logits


def record_parameter_scale(run: Run) -> None:
    """Remember the norm of the model's parameters (after setup) for :func:`check_finite`."""
    params = [p.detach().float().norm() for p in run.model.parameters()]
    if params:
        run.state["_param_norm0"] = torch.stack(params).norm()


def effective_classes(counts: torch.Tensor) -> float:
    """exp(entropy) of a class histogram: 10 for ten equal classes, 1 for one class."""
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum())) if len(p) else 0.0


# a domain's predictions are collapsed when they spread over fewer classes than this share of
# the labels' and are right no more often than this multiple of chance (benchmarks: the lowest
# share of a built-in strategy's default run on digits-c / digits-shift is 0.22, RoTTA's on
# contrast, where the source model itself puts 91 % of the domain in one class: hence the
# comparison with the source model below)
COLLAPSE_SPREAD = 0.3
COLLAPSE_CHANCE = 1.5


def check_collapse(
    run: Run,
    predicted: torch.Tensor,
    labels: torch.Tensor,
    where: str,
    correct: int | None = None,
    source_predicted=None,
) -> None:
    """A model that adapts (has an optimizer) and has collapsed on a domain must not be scored
    (e.g. ``--set lr=1e30``, or an lr high enough to keep the weights finite): its predictions
    are all one class, or they spread over fewer than ``COLLAPSE_SPREAD`` of the labels'
    effective classes while being right no more often than ``COLLAPSE_CHANCE`` x chance, and the
    source model's predictions on the same domain (``source_predicted()``, asked for only then)
    spread over at least twice as many classes (a domain the source model itself maps to one
    class is the source model's failure, not the adaptation's). ``predicted`` / ``labels``:
    per-class counts on the domain."""
    if run.optimizer is None or int((labels > 0).sum()) < 2:
        return
    total = int(predicted.sum())
    if not total:
        return
    if int(predicted.max()) == total:
        raise DivergenceError(
            f"the model collapsed: all {total} predictions on {where!r} were class "
            f"{int(predicted.argmax())}; lower the learning rate, e.g. --set lr=..."
        )
    if correct is None or source_predicted is None:
        return
    spread, wanted = effective_classes(predicted), effective_classes(labels)
    chance = 1.0 / wanted
    if spread >= COLLAPSE_SPREAD * wanted or correct / total > COLLAPSE_CHANCE * chance:
        return
    source = effective_classes(source_predicted())
    if source >= 2 * spread:
        top = int(predicted.argmax())
        raise DivergenceError(
            f"the model collapsed on {where!r}: its predictions spread over {spread:.1f} "
            f"effective classes (the labels over {wanted:.1f}, the source model's over "
            f"{source:.1f}), {100 * int(predicted.max()) / total:.0f} % of them class {top}, "
            f"{100 * correct / total:.0f} % right; lower the learning rate, e.g. --set lr=..."
        )


def flag_nonfinite(run: Run, tensor: torch.Tensor) -> None:
    """Remember, on the device and without a sync, whether ``tensor`` has a NaN/inf."""
    flag = ~torch.isfinite(tensor.detach()).all()
    bad = run.state.get("_nonfinite")
    run.state["_nonfinite"] = flag if bad is None else bad | flag


def evaluate(
    run: Run,
    exp: Experience,
    class_mask: torch.Tensor | None,
    batch_size: int,
    meter: FlopMeter | None = None,
    topk: int = 1,
) -> torch.Tensor:
    """Accuracy in percent on ``exp.test`` as a 0-d tensor (no host sync here); ``topk`` > 1:
    a prediction is correct when the label is among the k highest logits (NEVIS' top-5)."""
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    total = 0
    batches = iterate(exp.test, batch_size, run.device)
    for x, y in run.progress.track(
        batches, num_batches(exp.test, batch_size), f"eval {exp.name}", transient=True
    ):
        batch = Batch(x=x, y=None, class_mask=class_mask)
        # the run's precision around every strategy's prediction (a plugin need not know it)
        if meter is not None and meter.wants_sample:
            with run.autocast():
                logits, flops = counted(lambda b=batch: run.hook.cladapt_predict(run=run, batch=b))
            meter.sample(flops, len(y))
        else:
            with run.autocast():
                logits = run.hook.cladapt_predict(run=run, batch=batch)
        if meter is not None:
            meter.add(len(y))
        logits = checked_logits(run, logits, len(y))
        if topk == 1:
            correct += (logits.argmax(1) == y).sum()
        else:
            top = logits.topk(min(topk, logits.shape[1]), dim=1).indices
            correct += (top == y[:, None]).any(1).sum()
        total += len(y)
        run.images_seen += len(y)
    check_finite(run)  # NaN logits would be scored as class 0
    return correct.double() * (100.0 / max(total, 1))


def class_mask(run: Run, exp: Experience) -> torch.Tensor | None:
    """Task-incremental setting: only the experience's own classes are allowed."""
    if run.setting != "task-incremental" or exp.classes is None:
        return None
    mask = torch.zeros(run.stream.num_classes, dtype=torch.bool, device=run.device)
    mask[torch.as_tensor(exp.classes, device=run.device)] = True
    return mask


def records_from(values: dict[str, torch.Tensor | float], **where: str) -> list[Record]:
    """Turn a dict of metric tensors into records (one host sync for the whole group)."""
    names = list(values)
    tensors = [torch.as_tensor(values[n], dtype=torch.float64).cpu() for n in names]
    return [Record(metric=n, value=float(t), **where) for n, t in zip(names, tensors, strict=True)]
