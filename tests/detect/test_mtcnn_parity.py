"""MTCNN in JAX against facenet-pytorch (the reference): networks, resampling, NMS, whole detections."""

from __future__ import annotations

from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
import torchvision

from pkd_jax.detect import boxes as bx
from pkd_jax.detect.mtcnn import CascadeSettings, detect_faces
from pkd_jax.detect.mtcnn_nets import ONet, PNet, RNet
from pkd_jax.detect.resample import crop_area, resize_area, summed_area_table
from pkd_jax.testing.face_photos import photo_variants
from pkd_jax.testing.facenet_reference import assert_same_faces, facenet_module
from pkd_jax.weights.mtcnn import load_mtcnn_weights

SIDE = 256  # every photo variant has this size, so the cascade compiles once


@pytest.fixture(scope="module")
def reference():
    return facenet_module()


@pytest.fixture(scope="module")
def params(mtcnn_weights: Path):
    return load_mtcnn_weights(mtcnn_weights)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def _network_inputs(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Normalised crops around and away from the astronaut's face, so probabilities span 0 to 1."""
    photo = skimage.data.astronaut()
    crops = []
    for _ in range(n):
        x0, y0 = rng.integers(120, 200), rng.integers(20, 90)
        side = rng.integers(100, 200)
        crops.append(cv2.resize(photo[y0 : y0 + side, x0 : x0 + side], (w, h), interpolation=cv2.INTER_AREA))
    return ((np.stack(crops).astype(np.float32) - 127.5) / 128.0).astype(np.float32)


def test_networks_match_the_reference_within_1e_4(reference, params):
    rng = np.random.default_rng(0)
    nets = reference.models.mtcnn
    cases = [("pnet", nets.PNet, PNet, (3, 31, 40)), ("rnet", nets.RNet, RNet, (8, 24, 24))]
    cases.append(("onet", nets.ONet, ONet, (8, 48, 48)))
    for name, torch_net, flax_net, (n, h, w) in cases:
        x = _network_inputs(n, h, w, rng)
        with torch.no_grad():
            out = torch_net(pretrained=True).eval()(_nchw(x))
        ours = [np.asarray(o) for o in flax_net().apply(params[name], jnp.asarray(x))]
        if name == "pnet":  # (regression, probabilities) over NCHW maps
            want = [out[1][:, 1].numpy(), out[0].permute(0, 2, 3, 1).numpy()]
        elif name == "rnet":
            want = [out[1][:, 1].numpy(), out[0].numpy()]
        else:  # (regression, landmarks, probabilities)
            want = [out[2][:, 1].numpy(), out[0].numpy(), out[1].numpy()]
        for got, expected in zip(ours, want, strict=True):
            assert got.shape == expected.shape, name
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=name)
        assert want[0].min() < 0.3 and want[0].max() > 0.7, f"{name}: probabilities {want[0].ravel()}"


def test_area_resampling_matches_torch_interpolate():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    torch_frames = _nchw(frames.astype(np.float32))
    for size in [(19, 27), (37, 53), (50, 70)]:
        want = torch.nn.functional.interpolate(torch_frames, size=size, mode="area").permute(0, 2, 3, 1)
        got = resize_area(jnp.asarray(frames, jnp.float32), *size)
        np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-3)
    table = summed_area_table(jnp.asarray(frames))
    for r0, r1, c0, c1, size in [(3, 30, 5, 41, 24), (0, 37, 0, 53, 48), (10, 14, 20, 23, 24)]:
        region = torch_frames[:1, :, r0:r1, c0:c1]
        want = torch.nn.functional.interpolate(region, size=(size, size), mode="area")[0].permute(1, 2, 0)
        got = crop_area(table[0], jnp.array([r0, r1, c0, c1]), size)
        np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-3)


def test_nms_is_greedy_nms():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 60, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    valid = rng.uniform(size=300) > 0.2
    for threshold in (0.3, 0.5, 0.7):
        keep = np.asarray(bx.nms(jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(valid), threshold))
        want = torchvision.ops.nms(torch.from_numpy(boxes[valid]), torch.from_numpy(scores[valid]), threshold)
        assert set(np.flatnonzero(valid)[want.numpy()]) == set(np.flatnonzero(keep))
        assert 10 < keep.sum() < valid.sum()


def test_detections_match_the_reference_on_photo_variants(reference, params):
    variants = photo_variants(SIDE)
    frames = np.stack([image for image, _ in variants.values()])
    ours = detect_faces(params, jnp.asarray(frames), CascadeSettings(min_face=20))
    assert not np.asarray(ours.overflow).any()
    detector = reference.MTCNN(min_face_size=20, keep_all=True, select_largest=False)
    found = 0
    for i, name in enumerate(variants):
        ref_boxes, _, ref_points = detector.detect(frames[i], landmarks=True)
        valid = np.asarray(ours.valid[i])
        boxes, points = np.asarray(ours.boxes[i])[valid], np.asarray(ours.landmarks[i])[valid]
        found += assert_same_faces(name, boxes, points, ref_boxes, ref_points) > 0
    assert found >= len(variants) - 1, "the astronaut should be found in (nearly) every variant"
