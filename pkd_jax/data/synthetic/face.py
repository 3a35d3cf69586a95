"""Video: per-identity appearance, the matted astronaut photo, the face renderer and head motion.

* **Video.** ``skimage.data.astronaut()`` matted onto a per-video background (gradient, blobs or
  stripes) and varied per identity by hue, saturation, gamma, scale, position and horizontal
  flip. Per frame: expression warps (``cv2.remap`` with Gaussian-bump displacement fields around
  hand-placed landmarks) raise the mouth corners and cheeks with positive valence, lower the
  corners and knit the brows with negative valence (strong), open the eyes and raise the brows
  with arousal (weak), and open the jaw with the speech envelope; then head motion (translation,
  rotation, scale) whose amplitude grows with arousal, lighting drift and sensor noise. During
  spans covering ``face_absent_fraction`` of the frames the face is covered by a solid occluder
  or the person leaves the frame (``face_visible = 0``).
"""

from __future__ import annotations

import colorsys
import functools
import math

import cv2
import numpy as np
from skimage import data as skdata

from pkd_jax.data.synthetic.config import AbsentSpan, Appearance, SyntheticConfig
from pkd_jax.data.synthetic.signals import smooth_noise

# Landmarks on skimage.data.astronaut() (x, y in the 512x512 image), placed by hand and checked
# against OpenCV's Haar cascades: face box (177, 66, 95, 95), eyes centred at (202, 101) and
# (246, 103).
_FACE_BOX = (177.0, 66.0, 95.0, 95.0)
_FACE_CENTER = (_FACE_BOX[0] + _FACE_BOX[2] / 2, _FACE_BOX[1] + _FACE_BOX[3] / 2)
_LANDMARKS = {
    "eye_l": (204.0, 101.0),
    "eye_r": (246.0, 102.0),
    "brow_l": (203.0, 89.0),
    "brow_r": (247.0, 90.0),
    "brow_inner_l": (215.0, 92.0),
    "brow_inner_r": (235.0, 92.0),
    "cheek_l": (198.0, 122.0),
    "cheek_r": (254.0, 122.0),
    "mouth_l": (203.0, 140.0),
    "mouth_r": (248.0, 138.0),
    "upper_lip": (226.0, 143.0),
    "lower_lip": (226.0, 154.0),
    "neck": (226.0, 190.0),
}


def sample_appearance(rng: np.random.Generator, config: SyntheticConfig) -> Appearance:
    """Samples a visual identity: colour, scale, placement, flip and background."""
    w, h, j = config.frame_width, config.frame_height, config.face_center_jitter
    colors: list[tuple[float, float, float]] = []
    for _ in range(2):
        r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.9))
        colors.append((255.0 * r, 255.0 * g, 255.0 * b))
    return Appearance(
        face_width_px=float(rng.uniform(*config.face_width_frac) * w),
        face_center=(float(w * (0.5 + rng.uniform(-j, j))), float(h * (0.42 + rng.uniform(-j, j)))),
        flip=bool(rng.random() < config.flip_prob),
        hue_shift_deg=float(rng.uniform(-1, 1) * config.hue_shift_deg),
        saturation=float(rng.uniform(*config.saturation_range)),
        gamma=float(rng.uniform(*config.gamma_range)),
        background=str(rng.choice(["gradient", "blobs", "stripes"])),
        background_colors=(colors[0], colors[1]),
        sensor_noise_sd=float(rng.uniform(*config.sensor_noise_sd)),
    )


@functools.cache
def astronaut_rgba() -> np.ndarray:
    """The astronaut photo with a hand-built person matte as alpha, ``[512, 512, 4]`` uint8."""
    rgb = skdata.astronaut()
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (226, 98), (80, 92), 0, 0, 360, 255, -1)  # Head and hair.
    body = [(175, 168), (272, 168), (300, 158), (320, 175), (335, 205), (350, 250), (362, 300),
            (365, 345), (460, 400), (511, 430), (511, 511), (60, 511), (62, 300), (68, 230),
            (90, 200), (118, 175), (140, 158)]  # fmt: skip
    cv2.fillPoly(mask, [np.array(body, np.int32)], 255)
    # The studio backdrop is bright and unsaturated; carve it out around the hair and shoulders
    # but not from the face or the (also whitish) helmet ring.
    keep = np.zeros_like(mask)
    cv2.ellipse(keep, (226, 118), (42, 60), 0, 0, 360, 255, -1)
    cv2.ellipse(keep, (212, 212), (92, 62), 0, 0, 360, 255, -1)
    backdrop = (hsv[..., 1] < 45) & (hsv[..., 2] > 150) & (keep == 0)
    backdrop[300:] = False
    mask[backdrop] = 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = np.where(labels == largest, 255, 0).astype(np.uint8)
    alpha = cv2.GaussianBlur(mask, (0, 0), 2.0)
    return np.dstack([rgb, alpha])


def _recolor(rgb: np.ndarray, appearance: Appearance) -> np.ndarray:
    """Applies hue shift, saturation scale and gamma to a uint8 RGB image."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + round(appearance.hue_shift_deg / 2)) % 180  # OpenCV hue: 0-179.
    hsv[..., 1] = np.clip(hsv[..., 1] * appearance.saturation, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** appearance.gamma, 0, 255).astype(np.uint8)
    return cv2.LUT(out, lut)


def _background(rng: np.random.Generator, appearance: Appearance, h: int, w: int) -> np.ndarray:
    """A smooth per-video background, ``[h, w, 3]`` float32."""
    c0, c1 = (np.array(c, np.float32) for c in appearance.background_colors)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if appearance.background == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        mix = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    elif appearance.background == "blobs":
        coarse = rng.random((rng.integers(3, 7), rng.integers(3, 7))).astype(np.float32)
        mix = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        period = rng.uniform(0.15, 0.4) * w
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period + rng.uniform(0, 2 * np.pi))
    mix = np.clip(mix, 0, 1)[..., None]
    img = c0 * (1 - mix) + c1 * mix
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.5)
    return img + 6.0 * grain[..., None]


def _bump(gx: np.ndarray, gy: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian bump with unit peak."""
    return np.exp(-((gx - centre[0]) ** 2 + (gy - centre[1]) ** 2) / (2 * sigma * sigma))


class FaceRenderer:
    """Renders frames of one identity: expression warp, head motion, compositing, noise."""

    n_fields = 4  # Coefficients: positive valence, negative valence, arousal, jaw opening.

    def __init__(self, appearance: Appearance, config: SyntheticConfig, rng: np.random.Generator):
        self.cfg = config
        w, h = config.frame_width, config.frame_height
        # The person canvas has a margin so head motion never reveals a cut edge of the photo.
        self.margin = m = int(0.25 * max(w, h))
        scale = appearance.face_width_px / _FACE_BOX[2]
        self.face_width = appearance.face_width_px
        src = astronaut_rgba().copy()
        src[..., :3] = _recolor(src[..., :3], appearance)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        src = cv2.resize(src, None, fx=scale, fy=scale, interpolation=interp)
        cx, cy = appearance.face_center
        if appearance.flip:
            src = np.ascontiguousarray(src[:, ::-1])
            face_x = src.shape[1] - 1 - _FACE_CENTER[0] * scale
        else:
            face_x = _FACE_CENTER[0] * scale
        shift = np.array([cx + m - face_x, cy + m - _FACE_CENTER[1] * scale])
        place = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
        self.canvas = cv2.warpAffine(src, place, (w + 2 * m, h + 2 * m), flags=cv2.INTER_LINEAR)
        self.work = self.canvas.copy()

        def to_canvas(p: tuple[float, float]) -> np.ndarray:
            x = src.shape[1] - 1 - p[0] * scale if appearance.flip else p[0] * scale
            return np.array([x, p[1] * scale]) + shift

        self.landmarks = {k: to_canvas(p) for k, p in _LANDMARKS.items()}
        self.face_centre = to_canvas(_FACE_CENTER)
        self._build_fields()
        self.background = _background(rng, appearance, h, w)
        self.ramp = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
        sd = appearance.sensor_noise_sd
        self.noise_bank = (sd * rng.standard_normal((8, h, w, 3))).astype(np.float32)

    def _build_fields(self) -> None:
        """Precomputes per-coefficient displacement fields over the face region of interest."""
        fw, lm, cfg = self.face_width, self.landmarks, self.cfg
        pts = np.array(list(lm.values()))
        lo = np.floor(pts.min(0) - 0.45 * fw).astype(int).clip(0)
        hi = np.ceil(pts.max(0) + 0.45 * fw).astype(int)
        hi = np.minimum(hi, [self.canvas.shape[1], self.canvas.shape[0]])
        self.roi = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        gy, gx = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32)
        self.grid = (gx, gy)
        mid_x = self.face_centre[0]
        fields = np.zeros((self.n_fields, *gx.shape, 2), np.float32)

        def add(k: int, centre: np.ndarray, sigma: float, motion: tuple[float, float]) -> None:
            fields[k] += _bump(gx, gy, centre, sigma * fw)[..., None] * (fw * np.array(motion))

        gm, gb = cfg.mouth_valence_gain, cfg.brow_valence_gain
        for side in ("l", "r"):
            out = math.copysign(1.0, lm[f"mouth_{side}"][0] - mid_x)
            # Positive valence: corners up and out, cheeks up.
            add(0, lm[f"mouth_{side}"], 0.09, (0.35 * out * gm, -gm))
            add(0, lm[f"cheek_{side}"], 0.12, (0.0, -0.35 * gm))
            # Negative valence: corners down and in, inner brows down and together.
            add(1, lm[f"mouth_{side}"], 0.09, (-0.25 * out * gm, gm))
            add(1, lm[f"brow_inner_{side}"], 0.06, (-0.5 * out * gb, gb))
            # Arousal: upper lids and brows up, lower lids down.
            eye = lm[f"eye_{side}"]
            add(2, eye + np.array([0.0, -0.035 * fw]), 0.04, (0.0, -cfg.eye_arousal_gain))
            add(2, eye + np.array([0.0, 0.035 * fw]), 0.04, (0.0, 0.4 * cfg.eye_arousal_gain))
            add(2, lm[f"brow_{side}"], 0.07, (0.0, -cfg.brow_arousal_gain))
        add(0, lm["lower_lip"], 0.07, (0.0, 0.25 * gm))  # Broad smile parts the lips.
        add(1, lm["lower_lip"], 0.07, (0.0, -0.7 * gm))  # Pressed lips hide the teeth.
        add(1, lm["upper_lip"], 0.06, (0.0, 0.3 * gm))
        add(3, lm["lower_lip"] + np.array([0.0, 0.04 * fw]), 0.1, (0.0, cfg.jaw_speech_gain))
        self.fields = fields

    def render(
        self,
        coefficients: np.ndarray,
        head: np.ndarray,
        light: tuple[float, float],
        noise_index: int,
        span: AbsentSpan | None,
    ) -> np.ndarray:
        """Renders one RGB uint8 frame.

        Args:
          coefficients: ``[4]`` expression coefficients (see ``n_fields``).
          head: ``(tx, ty, rotation_deg, scale)`` head pose.
          light: ``(gain, horizontal slope)`` of the lighting.
          noise_index: Which pre-drawn sensor-noise frame to add.
          span: The face-absent span covering this frame, if any.
        """
        w, h = self.cfg.frame_width, self.cfg.frame_height
        if span is not None and span.mode == "out_of_frame":
            img = self.background.copy()
        else:
            motion = np.tensordot(coefficients.astype(np.float32), self.fields, axes=1)
            map_x = self.grid[0] - motion[..., 0]
            map_y = self.grid[1] - motion[..., 1]
            self.work[self.roi] = cv2.remap(self.canvas, map_x, map_y, cv2.INTER_LINEAR)
            _, _, rot, scale = head
            affine = self._affine(head)
            person = cv2.warpAffine(self.work, affine, (w, h), flags=cv2.INTER_LINEAR)
            alpha = person[..., 3:].astype(np.float32) * (1.0 / 255.0)
            img = self.background + (person[..., :3].astype(np.float32) - self.background) * alpha
            if span is not None:  # Solid occluder (e.g. a hand or an object) over the whole head.
                centre = affine @ np.append(self.face_centre, 1.0)
                axes = (round(0.8 * self.face_width * scale), round(1.0 * self.face_width * scale))
                cv2.ellipse(img, tuple(round(c) for c in centre), axes, rot, 0, 360,
                            span.color, -1)  # fmt: skip
        img *= light[0] + light[1] * self.ramp
        img += self.noise_bank[noise_index]
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)

    def _affine(self, head: np.ndarray) -> np.ndarray:
        """Canvas -> frame transform of a head pose ``(tx, ty, rotation_deg, scale)``."""
        tx, ty, rot, scale = head
        affine = cv2.getRotationMatrix2D(tuple(self.landmarks["neck"]), rot, scale)
        affine[:, 2] += (tx - self.margin, ty - self.margin)
        return affine

    def face_box(self, head: np.ndarray, context: float = 1.4) -> tuple[float, float, float]:
        """``(centre x, centre y, side)`` in the frame of a square around the face, ``context`` face
        widths wide, for aligned-crop style outputs (Aff-Wild2 layout)."""
        centre = self._affine(head) @ np.append(self.face_centre, 1.0)
        return float(centre[0]), float(centre[1]), context * self.face_width * float(head[3])


def head_motion(rng: np.random.Generator, arousal: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """Head pose per frame, ``[T, 4]`` = (tx px, ty px, rotation deg, scale)."""
    n, fps, w = len(arousal), config.fps, config.frame_width
    energy = 1.0 + config.head_motion_arousal_gain * (arousal + 1.0) / 2.0
    fast = smooth_noise(rng, n, config.head_motion_tau_s * fps, dims=3)
    slow = smooth_noise(rng, n, 4.0 * fps, dims=4)
    tx = w * (config.head_translation_sd * energy * fast[0] + config.head_drift_sd * slow[0])
    ty = w * (0.6 * config.head_translation_sd * energy * fast[1] + 0.5 * config.head_drift_sd * slow[1])
    rot = config.head_rotation_sd_deg * (energy * fast[2] + slow[2])
    scale = 1.0 + 0.03 * slow[3]
    limit = 0.12 * w
    return np.stack([np.clip(tx, -limit, limit), np.clip(ty, -limit, limit), np.clip(rot, -10, 10), scale], 1)
