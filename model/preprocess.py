"""The preprocessing spec and the one function that turns display-unit pixels into model input.

Display units are 0..255 by the one intensity rule `INTENSITY_RULE` (a DICOM after modality LUT,
VOI window or the encodable range of BitsStored, and MONOCHROME1 inversion; a PNG/JPEG as stored,
16-bit PNG scaled by 255/65535). `preprocess` = `normalise(to_unit(pixels))`:

- `to_unit`: optional display window [window_low, window_high] -> 0..1, then a square resize
  (bilinear, antialiased) to `image_size`; shape (H, W, 1). Training caches this and augments it.
- `normalise`: `(unit * scale - mean) / std` per channel after replicating to `channels`.

Training, prediction and clinical inference all call these functions with the spec that is
stored beside the model (`models/preprocessing.json`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from evidence.errors import ToolkitError

from .dicom import INTENSITY_RULE  # the one intensity rule (model.dicom.read_pixels), recorded in the spec

SPEC_VERSION = "preprocessing/1"

#: `intensity_rule` of a spec written before the rule was recorded.
UNRECORDED_RULE = "not recorded (spec written before intensity/1)"

# ImageNet normalisation of the keras.applications bases, expressed on unit (0..1) input.
# "caffe" (VGG16, ResNet50): x*255 - BGR mean; channels of a grayscale image are equal, so only
# the per-channel mean matters. "torch" (DenseNet121): (x - mean) / std.
NORMALISATIONS = {
    "unit": {"scale": 1.0, "mean": [0.0], "std": [1.0]},
    "caffe": {"scale": 255.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]},
    "torch": {"scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


class SpecError(ToolkitError, ValueError):
    """A preprocessing spec is malformed; the message names the field."""


@dataclass(frozen=True)
class PreprocessingSpec:
    image_size: int = 64
    channels: int = 1
    normalisation: str = "unit"
    scale: float = 1.0
    mean: list = field(default_factory=lambda: [0.0])
    std: list = field(default_factory=lambda: [1.0])
    window_low: float = 0.0
    window_high: float = 255.0
    resize_method: str = "bilinear"
    antialias: bool = True
    input_units: str = "display 0..255 (DICOM: modality LUT, VOI window, MONOCHROME1 inverted)"
    intensity_rule: str = INTENSITY_RULE
    version: str = SPEC_VERSION

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 8:
            raise SpecError(f"preprocessing spec: image_size must be an integer >= 8, got {self.image_size!r}")
        if self.channels not in (1, 3):
            raise SpecError(f"preprocessing spec: channels must be 1 or 3, got {self.channels!r}")
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise SpecError(f"preprocessing spec: mean/std need 1 or {self.channels} values")
        if any(s <= 0 for s in self.std):
            raise SpecError("preprocessing spec: std values must be > 0")
        if not self.window_high > self.window_low:
            raise SpecError("preprocessing spec: window_high must be greater than window_low")
        if self.version != SPEC_VERSION:
            raise SpecError(f"preprocessing spec: version {self.version!r} is not {SPEC_VERSION!r}")

    @classmethod
    def create(cls, image_size: int, channels: int, normalisation: str = "unit", **kw) -> "PreprocessingSpec":
        """A spec with a named normalisation ("unit", "caffe", "torch")."""
        if normalisation not in NORMALISATIONS:
            raise SpecError(f"preprocessing spec: normalisation must be one of {', '.join(NORMALISATIONS)}, "
                            f"got {normalisation!r}")
        norm = NORMALISATIONS[normalisation]
        mean, std = norm["mean"], norm["std"]
        if len(mean) != channels:
            if channels == 1:  # a grayscale copy of a 3-channel normalisation: channel means are averaged
                mean, std = [float(np.mean(mean))], [float(np.mean(std))]
            else:
                mean, std = mean * channels, std * channels
        return cls(image_size=int(image_size), channels=int(channels), normalisation=normalisation,
                   scale=float(norm["scale"]), mean=[float(m) for m in mean], std=[float(s) for s in std], **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessingSpec":
        if not isinstance(d, dict):
            raise SpecError("preprocessing spec: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"preprocessing spec: unknown field(s) {', '.join(unknown)}")
        return cls(**{"intensity_rule": UNRECORDED_RULE, **d})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def load_spec(path: str | Path) -> PreprocessingSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"preprocessing spec not found: {path} (run `python -m model.train` to write it)")
    try:
        return PreprocessingSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise SpecError(f"preprocessing spec {path} is not valid JSON: {e}") from None


def to_unit(pixels, spec: PreprocessingSpec):
    """Display-unit pixels (H, W), (H, W, 1) or (N, H, W, 1), any real dtype -> windowed, resized
    (S, S, 1) or (N, S, S, 1) float32 in 0..1.

    When the window covers the whole display range 0..255 (the default), its clip cannot change a
    display value, and the resize is linear with weights that sum to one, so the window is applied
    after the resize: the same values, computed on S*S pixels instead of H*W.
    """
    from .tf import tf

    x = tf.convert_to_tensor(pixels)
    if x.shape.rank == 2:
        x = x[..., None]
    low, width = spec.window_low, spec.window_high - spec.window_low
    size = [spec.image_size, spec.image_size]
    if _window_covers_display_range(spec):
        if x.dtype != tf.uint8:  # the resize reads uint8 itself and returns float32
            x = tf.cast(x, tf.float32)
        x = tf.image.resize(x, size, method=spec.resize_method, antialias=spec.antialias)
        x = (x - low) / width
    else:
        x = tf.clip_by_value((tf.cast(x, tf.float32) - low) / width, 0.0, 1.0)
        x = tf.image.resize(x, size, method=spec.resize_method, antialias=spec.antialias)
    return tf.clip_by_value(x, 0.0, 1.0)


def _window_covers_display_range(spec: PreprocessingSpec) -> bool:
    return spec.window_low <= 0.0 and spec.window_high >= 255.0


def normalise(unit, spec: PreprocessingSpec):
    """(..., S, S, 1) unit-range tensor -> (..., S, S, channels) model input."""
    from .tf import tf

    x = tf.convert_to_tensor(unit, dtype=tf.float32)
    if spec.channels > 1:
        x = tf.concat([x] * spec.channels, axis=-1)
    mean = tf.constant(spec.mean, tf.float32)
    std = tf.constant(spec.std, tf.float32)
    return (x * spec.scale - mean) / std


def preprocess(pixels2d: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """The model input (H, W, C) float32 for one image given in display units 0..255."""
    return preprocess_batch([pixels2d], spec)[0]


def preprocess_batch(images: Sequence[np.ndarray], spec: PreprocessingSpec, chunk: int = 16) -> np.ndarray:
    """`normalise(to_unit(pixels))` for 2-D images in display units 0..255 (uint8 or any real
    dtype) -> (N, S, S, C) float32 in input order. Images of one shape and dtype go through one
    compiled TensorFlow graph per spec together, `chunk` at a time (a call costs about as much as
    preprocessing a small image; larger stacks leave the cache: measured by `make bench`)."""
    out = np.empty((len(images), spec.image_size, spec.image_size, spec.channels), np.float32)
    groups: dict[tuple, list[int]] = {}
    arrays = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = img.astype(np.float32, copy=False)
        if img.ndim != 2:
            raise ValueError(f"preprocess: expected a 2-D grayscale array, got shape {img.shape}")
        arrays.append(img)
        groups.setdefault((img.shape, img.dtype.name), []).append(i)
    key = spec.to_json()
    for (_, dtype), members in groups.items():
        graph = _compiled(key, dtype)
        for start in range(0, len(members), chunk):
            idx = members[start:start + chunk]
            out[idx] = graph(np.stack([arrays[i] for i in idx])).numpy()
    return out


@functools.lru_cache(maxsize=16)
def _compiled(spec_json: str, dtype: str):
    from .tf import tf

    spec = PreprocessingSpec.from_dict(json.loads(spec_json))
    return tf.function(lambda stack: normalise(to_unit(stack[..., None], spec), spec),
                       input_signature=[tf.TensorSpec([None, None, None], tf.as_dtype(dtype))])
