"""Preprocessing ops on small arrays whose answers are known by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pxflow.pipelines.ops.preprocess import (
    NormalizeImage,
    Pad,
    PadStride,
    Permute,
    Preprocessor,
    Resize,
    Sample,
    WarpAffine,
    to_batch,
)


def test_resize_without_keep_ratio_sets_per_axis_scale():
    s = Resize(target_size=[50, 60], interp=1)(Sample.from_bgr(np.zeros((100, 200, 3), np.uint8)))
    assert s.img.shape == (50, 60, 3)
    assert (s.scale_h, s.scale_w) == pytest.approx((0.5, 0.3))


def test_resize_keep_ratio_fits_long_and_short_side():
    # 100x200 into 320x320: scale = min(320/200, 320/100) = 1.6 -> 160x320
    s = Resize(target_size=[320, 320], keep_ratio=True)(Sample.from_bgr(np.zeros((100, 200, 3), np.uint8)))
    assert s.img.shape[:2] == (160, 320)
    assert s.scale_h == pytest.approx(1.6) and s.scale_w == pytest.approx(1.6)


@pytest.mark.parametrize("code,flag", [(0, cv2.INTER_NEAREST), (1, cv2.INTER_LINEAR), (2, cv2.INTER_CUBIC), (3, cv2.INTER_AREA), (4, cv2.INTER_LANCZOS4)])
def test_resize_interp_codes_map_to_opencv(code, flag):
    img = np.random.default_rng(code).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    out = Resize(target_size=[20, 30], interp=code)(Sample.from_bgr(img)).img
    np.testing.assert_array_equal(out, cv2.resize(img, (30, 20), interpolation=flag))


def test_colour_swap_is_deferred_but_happens():
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    pre = Preprocessor([Resize([2, 2]), NormalizeImage(mean=[0, 0, 0], std=[1, 1, 1]), Permute()])
    out = pre(img).img
    assert out.shape == (3, 2, 2)
    assert np.allclose(out[0], 1.0) and np.allclose(out[1:], 0.0)  # channel 0 is R


def test_normalize_matches_definition():
    img = np.full((2, 2, 3), 255, np.uint8)
    s = NormalizeImage(mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 2.0])(Sample.from_bgr(img))
    # RGB order after the swap; every channel value is 1.0 before normalisation
    assert np.allclose(s.img[0, 0], [(1 - 0.5) / 0.5, (1 - 0.25) / 0.25, (1 - 0.0) / 2.0])
    assert s.img.dtype == np.float32


def test_pad_stride_pads_to_multiple_with_zeros():
    s = Sample.from_bgr(np.ones((33, 65, 3), np.uint8))
    s = Permute()(NormalizeImage(mean=[0, 0, 0], std=[1, 1, 1], is_scale=False)(s))
    out = PadStride(32)(s).img
    assert out.shape == (3, 64, 96)
    assert out[:, :33, :65].min() == 1 and out[:, 33:].max() == 0 and out[:, :, 65:].max() == 0


def test_pad_fills_with_fill_value():
    s = Pad(size=[8, 10], fill_value=[1, 2, 3])(Sample.from_bgr(np.zeros((4, 5, 3), np.uint8)))
    assert s.img.shape == (8, 10, 3)
    assert list(s.img[7, 9]) == [1, 2, 3] and s.img[0, 0].sum() == 0


def test_warp_affine_keep_res_output_size():
    s = WarpAffine(keep_res=True, pad=31)(Sample.from_bgr(np.zeros((100, 50, 3), np.uint8)))
    assert s.img.shape[:2] == ((100 | 31) + 1, (50 | 31) + 1)
    assert s.want == "BGR"


def test_from_config_builds_ops_and_adds_permute():
    pre = Preprocessor.from_config([{"type": "Resize", "target_size": [8, 8], "keep_ratio": False, "interp": 2}])
    assert isinstance(pre.ops[-1], Permute)
    assert pre(np.zeros((16, 16, 3), np.uint8)).img.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="unsupported preprocessing op"):
        Preprocessor.from_config([{"type": "Bogus"}])


def test_to_batch_pads_mixed_sizes_and_reports_geometry():
    pre = Preprocessor([Resize([32, 32], keep_ratio=True), Permute()])
    a, b = pre(np.zeros((10, 20, 3), np.uint8)), pre(np.zeros((20, 10, 3), np.uint8))
    batch = to_batch([a, b])
    assert batch["image"].shape == (2, 3, 32, 32)
    assert batch["im_shape"].tolist() == [[16, 32], [32, 16]]
    np.testing.assert_allclose(batch["scale_factor"], [[1.6, 1.6], [1.6, 1.6]], rtol=1e-6)
