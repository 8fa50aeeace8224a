"""Detection postprocessing on hand-made rows."""

from __future__ import annotations

import numpy as np
import pytest

from pxflow.pipelines.ops.boxes import class_aware_nms, clip_boxes, filter_by_threshold, label_for, parse_threshold, split_by_counts

ROWS = np.array(
    [
        [0, 0.90, 10, 10, 50, 50],
        [1, 0.40, 20, 20, 60, 60],
        [2, 0.60, -5, -5, 30, 30],
        [-1, 0.99, 0, 0, 1, 1],  # padding row
    ],
    dtype=np.float32,
)


def test_split_single_image_ignores_bogus_count():
    (only,) = split_by_counts(ROWS, np.array([2125]), 1)
    assert only.shape == (4, 6)


def test_split_batch_by_counts_and_reject_mismatch():
    a, b = split_by_counts(ROWS, np.array([1, 3]), 2)
    assert a.shape[0] == 1 and b.shape[0] == 3
    with pytest.raises(ValueError):
        split_by_counts(ROWS, np.array([1, 1]), 2)


def test_float_threshold_is_strict_and_drops_padding():
    kept = filter_by_threshold(ROWS, 0.6)
    assert kept[:, 0].tolist() == [0]  # 0.60 is not > 0.6; padding row dropped despite 0.99


def test_dict_threshold_defaults_to_half_for_unnamed_classes():
    kept = filter_by_threshold(ROWS, {1: 0.3})
    assert sorted(kept[:, 0].tolist()) == [0, 1, 2]  # class 0: 0.9>0.5, class 1: 0.4>0.3, class 2: 0.6>0.5
    kept = filter_by_threshold(ROWS, {0: 0.95})
    assert sorted(kept[:, 0].tolist()) == [2]


def test_clip_and_drop_empty():
    rows = np.array([[0, 1, -5, -5, 30, 30], [0, 1, 90, 10, 120, 20], [0, 1, 120, 5, 130, 9]], np.float32)
    out = clip_boxes(rows, width=100, height=50)
    assert out[:, 2:].tolist() == [[0, 0, 30, 30], [90, 10, 100, 20]]  # third box lies outside: dropped


def test_class_aware_nms_keeps_other_classes():
    rows = np.array([[0, 0.9, 0, 0, 10, 10], [0, 0.8, 1, 1, 10, 10], [1, 0.7, 1, 1, 10, 10]], np.float32)
    out = class_aware_nms(rows, 0.5)
    assert out[:, 1].tolist() == pytest.approx([0.9, 0.7])


def test_labels_outside_label_list_do_not_crash():
    assert label_for(3, ["a", "b"]) == "class_3"
    assert label_for(1, ["a", "b"]) == "b"


def test_parse_threshold_accepts_string_keys():
    assert parse_threshold({"0": "0.3"}) == {0: 0.3}
    assert parse_threshold("0.25") == 0.25
    assert parse_threshold(None) is None
