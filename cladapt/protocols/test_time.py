"""Online test-time adaptation: predict-then-adapt on each test batch, domain after domain.

The model starts as the stream's source model (trained on the labelled source data and cached,
or ``--checkpoint``, or a ``--pretrained`` model for streams without source data). The strategy
sees only images: labels stay inside the protocol and are used for scoring the logits
``cladapt_adapt`` returns. Settings:

- ``continual`` (default): domains in sequence, never reset.
- ``episodic``: ``cladapt_reset`` before every domain but the first.
- ``gradual``: each domain at severities 1, 2, 3, 4, 5, 4, 3, 2, 1 in turn (CoTTA's gradual
  benchmark; streams whose experiences offer ``at_severity``); one error per (domain, severity).
- ``mixed``: all domains' test images shuffled into one pass; error reported per domain.
- ``correlated``: as continual, each domain's test images sorted by class (the peer benchmark's
  ``correlated``, mariodoebler/test-time-adaptation).
- ``dirichlet``: as continual, each domain in RoTTA's temporally correlated label order (Dirichlet
  ``dirichlet_gamma`` over time slots; Yuan et al. CVPR 2023). See :mod:`cladapt.data.label_order`.
- ``probe``: one adaptation step on the first batch of the first domain, for its cost only (the
  activation bytes held for backward, trainable parameters, time, memory); no error is recorded.
  A cost does not depend on the weights or the images, so a cost probe can run a paper's
  architecture at its batch size on synthetic data (the ``*-probe`` streams).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.data import Dataset, TensorDataset

from cladapt import metrics
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import concat_datasets, iterate, num_batches
from cladapt.data.label_order import dirichlet_order, sorted_order
from cladapt.data.scenarios import targets_of
from cladapt.device import AMP_HELP
from cladapt.errors import CladaptError, ConfigError
from cladapt.profiling import saved_activation_bytes
from cladapt.protocols.base import (
    ProtocolResult,
    check_collapse,
    check_finite,
    checked_logits,
    record_parameter_scale,
)
from cladapt.results import Record
from cladapt.stream import Experience

GRADUAL_SEVERITIES = (1, 2, 3, 4, 5, 4, 3, 2, 1)


@dataclass
class TestTimeConfig:
    batch_size: int = param(64, "test batch size (1 is allowed)", ge=1)
    shuffle: bool = param(True, "shuffle each domain's test data (seeded by --seed)")
    amp: Literal["off", "bf16", "fp16"] = param("off", AMP_HELP)
    check_every: int = param(25, "check for NaN/inf losses and outputs every N batches", ge=1)
    dirichlet_gamma: float = param(
        0.1, "setting dirichlet: RoTTA's label concentration (smaller: longer runs)", gt=0
    )


def _tag_domains(datasets: list[Dataset], num_classes: int) -> Dataset:
    """One dataset whose label encodes (domain, class) as domain * num_classes + class."""
    from cladapt.data.nevis import OffsetTargets

    tagged = [
        TensorDataset(ds.tensors[0], ds.tensors[1] + d * num_classes)
        if isinstance(ds, TensorDataset)
        else OffsetTargets(ds, d * num_classes)
        for d, ds in enumerate(datasets)
    ]
    return concat_datasets(tagged)


class TestTimeProtocol:
    name = "test_time"
    Config = TestTimeConfig
    settings = ("continual", "episodic", "gradual", "mixed", "correlated", "dirichlet", "probe")

    def run(self, run: Run) -> ProtocolResult:
        run.model = run.source_model()
        run.hook.cladapt_setup(run=run)
        record_parameter_scale(run)
        if run.setting == "probe":
            return self._probe(run)
        if run.setting == "episodic":
            run.snapshot()
        if run.setting == "mixed":
            errors = self._mixed(run)
        else:
            errors = {}
            for i, (exp, data, label) in enumerate(self._phases(run)):
                if run.setting == "episodic" and i > 0:
                    run.hook.cladapt_reset(run=run)
                errors[label] = self._adapt_on(run, exp, i, data, label)
        headline = {"mean_error": metrics.mean_error(errors)}
        if "_saved_bytes" in run.state:
            headline["saved_activation_mb"] = run.state.pop("_saved_bytes") / 2**20
        return ProtocolResult(headline=headline, tables={"errors": errors})

    def _probe(self, run: Run) -> ProtocolResult:
        """One adaptation step on the first batch: its cost, no error (the ``probe`` setting)."""
        exp = run.stream.experiences[0]
        run.experience, run.experience_index = exp, 0
        run.hook.cladapt_before_experience(run=run, experience=exp)
        x, _ = next(iter(self._batches(run, exp.test, f"probe {exp.name}")))
        self._scored(run, x, 1)  # checked: shape, finite
        run.images_seen += len(x)
        check_finite(run, parameters=True)
        run.hook.cladapt_after_experience(run=run, experience=exp)
        saved = run.state.pop("_saved_bytes") / 2**20
        return ProtocolResult(headline={"saved_activation_mb": saved}, tables={})

    def _phases(self, run: Run) -> Iterator[tuple[Experience, Dataset, str]]:
        for exp in run.stream.experiences:
            if run.setting != "gradual":
                yield exp, exp.test, exp.name
                continue
            if exp.at_severity is None:
                raise ConfigError(
                    f"stream {run.stream.name!r} has no severity levels: "
                    "the gradual setting needs a corruption stream"
                )
            for s in GRADUAL_SEVERITIES:
                yield exp, exp.at_severity(s), f"{exp.name}@{s}"

    def _batches(self, run: Run, data: Dataset, label: str):
        cfg: TestTimeConfig = run.params
        order = None
        if run.setting in ("correlated", "dirichlet"):  # non-i.i.d.: labels decide the order
            labels = targets_of(data)
            order = (
                sorted_order(labels, run.generator)
                if run.setting == "correlated"
                else dirichlet_order(labels, cfg.dirichlet_gamma, run.generator)
            )
        batches = iterate(
            data,
            cfg.batch_size,
            run.device,
            shuffle=cfg.shuffle,
            generator=run.generator,
            order=order,
        )
        return run.progress.track(batches, num_batches(data, cfg.batch_size), f"adapt {label}")

    def _adapt_on(self, run: Run, exp: Experience, i: int, data: Dataset, label: str) -> float:
        run.experience, run.experience_index = exp, i
        run.hook.cladapt_before_experience(run=run, experience=exp)
        correct = torch.zeros((), dtype=torch.long, device=run.device)
        c = run.stream.num_classes
        predicted = torch.zeros(c, dtype=torch.long, device=run.device)
        labels = torch.zeros(c, dtype=torch.long, device=run.device)
        total = 0
        for b, (x, y) in enumerate(self._batches(run, data, label), 1):
            pred = self._scored(run, x, b).argmax(1)
            correct += (pred == y).sum()
            predicted += torch.bincount(pred, minlength=c)
            labels += torch.bincount(y, minlength=c)
            total += len(y)
            run.images_seen += len(y)
        check_finite(run, parameters=True)
        check_collapse(
            run, predicted, labels, label, int(correct), lambda: self._source_counts(run, data)
        )
        run.hook.cladapt_after_experience(run=run, experience=exp)
        error = 100.0 - float(correct) * 100.0 / max(total, 1)
        run.hook.cladapt_evaluated(
            run=run, records=[Record("error", error, trained_upto=label, eval_experience=label)]
        )
        return error

    def _scored(self, run: Run, x: torch.Tensor, b: int) -> torch.Tensor:
        """The strategy's logits for one batch; NaN/inf losses or logits stop the run. The
        run's first batch is adapted under a count of the activation bytes autograd holds for
        backward (peak; the models' own weights left out): the memory that EcoTTA-style methods
        save, independent of the device (``saved_activation_mb``). Counting does not change any
        value."""

        def adapt() -> torch.Tensor:
            # the run's precision (--set amp) around the strategy's whole step, so a plugin
            # that never calls run.autocast() still runs at the precision its rows record;
            # the built-ins keep their data transforms in fp32 (Augment disables autocast)
            try:
                with run.autocast():
                    return run.hook.cladapt_adapt(run=run, batch=Batch(x=x))
            except (AttributeError, TypeError) as exc:
                if "NoneType" not in str(exc):
                    raise
                # most often a plugin reading the labels: say why they are not there
                raise CladaptError(
                    f"cladapt_adapt failed on None ({exc}): in a test-time run batch.y is None, "
                    "labels are never shown to the strategy (it must adapt without them)"
                ) from exc

        if "_saved_bytes" in run.state:  # measured on the run's first batch (popped at its end)
            logits = adapt()
        else:
            resident = [run.model] + [
                m for m in vars(run.strategy).values() if isinstance(m, torch.nn.Module)
            ]
            logits, run.state["_saved_bytes"] = saved_activation_bytes(adapt, resident)
        logits = checked_logits(run, logits, len(x))
        if b % run.params.check_every == 0:
            check_finite(run)
        return logits

    def _source_counts(self, run: Run, data: Dataset, domain: int | None = None) -> torch.Tensor:
        """Per-class counts of the source model's predictions on ``data`` (only the images of
        ``domain`` in a mixed pass): what a collapse is compared with."""
        c = run.stream.num_classes
        counts = torch.zeros(c, dtype=torch.long, device=run.device)
        cuda = [run.device] if run.device.type == "cuda" else []
        # building the model may seed torch: the run's own random stream goes on untouched
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), run.autocast():
            model = run.source_model().eval()
            for x, y in iterate(data, run.params.batch_size, run.device):
                pred = model(x).argmax(1)
                if domain is not None:
                    pred = pred[y // c == domain]
                counts += torch.bincount(pred, minlength=c)
        return counts

    def _mixed(self, run: Run) -> dict[str, float]:
        exps = run.stream.experiences
        c, d = run.stream.num_classes, len(exps)
        data = _tag_domains([e.test for e in exps], c)
        mixed = Experience(name="mixed", kind="domain", test=data)
        run.experience, run.experience_index = mixed, 0
        run.hook.cladapt_before_experience(run=run, experience=mixed)
        correct = torch.zeros(d, dtype=torch.long, device=run.device)
        total = torch.zeros(d, dtype=torch.long, device=run.device)
        predicted = torch.zeros(d * c, dtype=torch.long, device=run.device)
        labels = torch.zeros(d * c, dtype=torch.long, device=run.device)
        for b, (x, tag) in enumerate(self._batches(run, data, "mixed domains"), 1):
            domain, y = tag // c, tag % c
            logits = self._scored(run, x, b)
            pred = logits.argmax(1)
            correct.index_add_(0, domain, (pred == y).long())
            total.index_add_(0, domain, torch.ones_like(domain))
            predicted += torch.bincount(domain * c + pred, minlength=d * c)
            labels += torch.bincount(tag, minlength=d * c)
            run.images_seen += len(y)
        check_finite(run, parameters=True)
        for i, e in enumerate(exps):  # each domain as the continual setting checks it
            check_collapse(
                run,
                predicted[i * c : (i + 1) * c],
                labels[i * c : (i + 1) * c],
                e.name,
                int(correct[i]),
                lambda i=i: self._source_counts(run, data, domain=i),
            )
        run.hook.cladapt_after_experience(run=run, experience=mixed)
        errors = {
            e.name: 100.0 - 100.0 * float(k) / max(int(n), 1)
            for e, k, n in zip(exps, correct.tolist(), total.tolist(), strict=True)
        }
        run.hook.cladapt_evaluated(
            run=run,
            records=[
                Record("error", v, trained_upto="mixed", eval_experience=k)
                for k, v in errors.items()
            ],
        )
        return errors
