import numpy as np
import pytest

from cladapt import metrics

# Hand-computed example: 3 tasks. Row 0 = before training.
R = np.array(
    [
        [10.0, 20.0, 30.0],  # initial
        [90.0, 40.0, 35.0],  # after task 0
        [70.0, 95.0, 50.0],  # after task 1
        [60.0, 80.0, 85.0],  # after task 2
    ]
)


def test_average_accuracy_is_mean_of_last_row():
    assert metrics.average_accuracy(R) == pytest.approx((60 + 80 + 85) / 3)


def test_forgetting_uses_best_earlier_accuracy():
    # task0: max(90, 70) - 60 = 30; task1: max(95) - 80 = 15
    assert metrics.forgetting(R) == pytest.approx((30 + 15) / 2)


def test_bwt_compares_final_with_just_learned():
    # task0: 60 - 90 = -30; task1: 80 - 95 = -15
    assert metrics.backward_transfer(R) == pytest.approx(-22.5)


def test_fwt_compares_before_learning_with_initial_model():
    # task1: A[after 0, 1] - b1 = 40 - 20 = 20; task2: A[after 1, 2] - b2 = 50 - 30 = 20
    assert metrics.forward_transfer(R) == pytest.approx(20.0)


def test_forgetting_differs_from_negative_bwt_when_peak_is_later():
    R2 = np.array([[0, 0, 0], [50, 0, 0], [80, 90, 0], [70, 90, 90]], dtype=float)
    assert metrics.forgetting(R2) == pytest.approx((10 + 0) / 2)
    assert metrics.backward_transfer(R2) == pytest.approx(((70 - 50) + (90 - 90)) / 2)


def test_single_task_has_no_transfer_metrics():
    R1 = np.array([[10.0], [90.0]])
    assert metrics.average_accuracy(R1) == 90.0
    assert np.isnan(metrics.forgetting(R1)) and np.isnan(metrics.backward_transfer(R1))


def test_nan_entries_are_ignored():
    R3 = R.copy()
    R3[3, 2] = np.nan
    assert metrics.average_accuracy(R3) == pytest.approx(70.0)


def test_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(T\+1, T\)"):
        metrics.average_accuracy(np.zeros((3, 3)))


def test_mean_error():
    assert metrics.mean_error({"a": 10.0, "b": 30.0}) == 20.0


def test_average_incremental_accuracy_and_both_forgetting_definitions_by_hand():
    from cladapt import metrics as m

    R = np.array(
        [
            [10.0, 10.0, 10.0],  # before training
            [90.0, 20.0, 15.0],  # after experience 1
            [70.0, 80.0, 30.0],  # after experience 2
            [60.0, 50.0, 85.0],  # after experience 3
        ]
    )
    # iCaRL: mean over steps of the accuracy on what has been seen so far
    assert m.average_incremental_accuracy(R) == pytest.approx((90 + (70 + 80) / 2 + 195 / 3) / 3)
    # Chaudhry: best accuracy before the end minus the final one
    assert m.forgetting(R) == pytest.approx(((90 - 60) + (80 - 50)) / 2)
    # Avalanche's stream forgetting: accuracy right after training minus the final one
    assert m.stream_forgetting(R) == pytest.approx(((90 - 60) + (80 - 50)) / 2)
    R2 = R.copy()
    R2[2, 0] = 95.0  # a later rise of experience 1: only the max-based definition sees it
    assert m.forgetting(R2) == pytest.approx(((95 - 60) + (80 - 50)) / 2)
    assert m.stream_forgetting(R2) == pytest.approx(m.stream_forgetting(R))
    assert m.stream_forgetting(R) == pytest.approx(-m.backward_transfer(R))
    # pooled accuracy weights experiences by their test sizes
    assert m.weighted_average_accuracy(R, [100, 100, 200]) == pytest.approx(
        (60 * 100 + 50 * 100 + 85 * 200) / 400
    )
    assert m.average_accuracy(R) == pytest.approx(65.0)


def test_nevis_summary_by_hand():
    from cladapt.metrics import nevis_summary

    R = np.array([[10.0, 10.0], [80.0, 20.0], [70.0, 60.0]])  # diagonal after learning: 80, 60
    out = nevis_summary(R, [100, 300], {"b": 15.0})
    assert out["avg_error_after_learning"] == pytest.approx(30.0)  # (20 + 40) / 2
    # dm_nevis weights by examples: (80 * 100 + 60 * 300) / 400 = 65 % correct
    assert out["weighted_avg_error_after_learning"] == pytest.approx(35.0)
    assert out["avg_top5_error_after_learning"] == 15.0
    assert "avg_top5_error_after_learning" not in nevis_summary(R, [1, 1], {})
