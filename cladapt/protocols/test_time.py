"""Online test-time adaptation: predict-then-adapt on each test batch, domain after domain.

The model starts as the stream's source model (trained on the labelled source data and cached,
or ``--checkpoint``). The strategy sees only images: labels stay inside the protocol and are used
for scoring the logits ``cladapt_adapt`` returns. Settings: ``continual`` (never reset between
domains; the default) and ``episodic`` (``cladapt_reset`` before every domain but the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cladapt import metrics
from cladapt.batch import Batch
from cladapt.config import param
from cladapt.context import Run
from cladapt.data.batching import iterate, num_batches
from cladapt.protocols.base import ProtocolResult
from cladapt.results import Record


@dataclass
class TestTimeConfig:
    batch_size: int = param(64, "test batch size (1 is allowed)")
    shuffle: bool = param(True, "shuffle each domain's test data (seeded by --seed)")
    amp: Literal["auto", "off", "bf16", "fp16"] = param(
        "auto", "autocast: auto = bf16 on CUDA, off on CPU; off | bf16 | fp16"
    )


class TestTimeProtocol:
    name = "test_time"
    Config = TestTimeConfig
    settings = ("continual", "episodic")

    def run(self, run: Run) -> ProtocolResult:
        cfg: TestTimeConfig = run.params
        run.model = run.source_model()
        run.hook.cladapt_setup(run=run)
        if run.setting == "episodic":
            run.snapshot()
        errors: dict[str, float] = {}
        for i, exp in enumerate(run.stream.experiences):
            if run.setting == "episodic" and i > 0:
                run.hook.cladapt_reset(run=run)
            run.experience, run.experience_index = exp, i
            run.hook.cladapt_before_experience(run=run, experience=exp)
            correct = torch.zeros((), dtype=torch.long, device=run.device)
            total = 0
            batches = iterate(
                exp.test, cfg.batch_size, run.device, shuffle=cfg.shuffle, generator=run.generator
            )
            for x, y in run.progress.track(
                batches, num_batches(exp.test, cfg.batch_size), f"adapt {exp.name}"
            ):
                logits = run.hook.cladapt_adapt(run=run, batch=Batch(x=x))
                correct += (logits.argmax(1) == y).sum()
                total += len(y)
                run.images_seen += len(y)
            run.hook.cladapt_after_experience(run=run, experience=exp)
            error = 100.0 - float(correct) * 100.0 / max(total, 1)
            errors[exp.name] = error
            run.hook.cladapt_evaluated(
                run=run,
                records=[Record("error", error, trained_upto=exp.name, eval_experience=exp.name)],
            )
        return ProtocolResult(
            headline={"mean_error": metrics.mean_error(errors)}, tables={"errors": errors}
        )
