"""The cost counters that docs/tta.md's memory tables come from."""

from __future__ import annotations

import torch
from torch import nn

from cladapt.profiling import saved_activation_bytes

N, D = 64, 100
ONE_TENSOR = N * D * 4  # float32 bytes of the input or of one ReLU output


def _setup():
    torch.manual_seed(0)
    return nn.Linear(D, D), torch.randn(N, D)


def test_saved_bytes_counts_each_storage_once_and_leaves_out_parameters():
    lin, x = _setup()
    # Linear saves its input (x) and its weight (resident); ReLU saves its output
    _, n = saved_activation_bytes(lambda: lin(x).relu().sum().backward(), [lin])
    assert n == 2 * ONE_TENSOR


def test_saved_bytes_is_the_peak_not_the_sum_over_passes_run_in_turn():
    lin, x = _setup()

    def two_passes_in_turn() -> None:  # SAM-like: each graph is freed by its backward
        lin(x).relu().sum().backward()
        lin(x * 2).relu().sum().backward()

    def two_graphs_alive() -> None:  # both graphs held until one backward
        (lin(x).relu().sum() + lin(x * 2).relu().sum()).backward()

    _, in_turn = saved_activation_bytes(two_passes_in_turn, [lin])
    _, together = saved_activation_bytes(two_graphs_alive, [lin])
    assert in_turn == 2 * ONE_TENSOR  # one pass's input + ReLU output at a time
    assert together == 4 * ONE_TENSOR  # x, 2x and both ReLU outputs at once
