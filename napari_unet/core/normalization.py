"""Robust per-channel intensity normalisation.

Percentiles (not min/max) so that a few hot pixels do not squash the useful range. The
values are computed once, on the training image, and stored in the model file: prediction
must see intensities on the same scale the model learned on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError

# Enough values for stable percentiles; taking more only costs time on huge images.
_MAX_SAMPLES_PER_CHANNEL = 4_000_000


@dataclass(frozen=True)
class Normalization:
    """Per-channel affine map ``(x - low) / (high - low)``.

    Parameters
    ----------
    low, high
        One value per channel.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or not self.low:
            raise InputError("normalization needs one low and one high value per channel")

    @property
    def num_channels(self) -> int:
        """Number of channels this normalisation was fitted on."""
        return len(self.low)

    @classmethod
    def fit(
        cls,
        image: np.ndarray,
        percentiles: tuple[float, float] = (1.0, 99.8),
        channel_axis: int = 0,
    ) -> Normalization:
        """Fit on an image whose channels lie along ``channel_axis`` (e.g. ``(C, *spatial)``).

        Every channel is fitted over all its pixels (all slices and frames), subsampled
        evenly to at most a few million values.

        Non-finite pixels are ignored. A constant channel gets a unit range so it maps to a
        constant rather than dividing by zero.

        Raises
        ------
        InputError
            If a channel has no finite pixel.
        """
        lows, highs = [], []
        for c in range(image.shape[channel_axis]):
            channel = image[(slice(None),) * channel_axis + (c,)]  # a view, not a copy
            # .flat picks the subsample without first copying a non-contiguous channel.
            step = channel.size // _MAX_SAMPLES_PER_CHANNEL + 1
            values = np.asarray(channel.flat[::step]).astype(np.float64, copy=False)
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise InputError(f"image channel {c} has no finite pixel values (all NaN/Inf)")
            low, high = np.percentile(values, percentiles)
            if not high > low:
                high = low + 1.0
            lows.append(float(low))
            highs.append(float(high))
        return cls(tuple(lows), tuple(highs))

    def per_plane(self, planes: int) -> Normalization:
        """Return this map for samples that stack ``planes`` slices per image channel.

        A 2D model with Z context reads each channel's neighbouring slices as channels
        ``c * planes .. c * planes + planes - 1`` (see
        :class:`~napari_unet.core.axes.SampleStack`); they share channel ``c``'s values.
        """
        if planes == 1:
            return self
        return Normalization(tuple(np.repeat(self.low, planes).tolist()),
                             tuple(np.repeat(self.high, planes).tolist()))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Normalise a channel-first image to float32; non-finite pixels become 0.

        Raises
        ------
        InputError
            If the channel count differs from the one this was fitted on.
        """
        if image.shape[0] != self.num_channels:
            raise InputError(
                f"the model expects {self.num_channels} channel(s), the image has "
                f"{image.shape[0]}"
            )
        out = np.empty(image.shape, dtype=np.float32)
        for c in range(self.num_channels):
            scale = 1.0 / (self.high[c] - self.low[c])
            np.subtract(image[c], self.low[c], out=out[c], casting="unsafe")
            out[c] *= scale
        if not np.issubdtype(image.dtype, np.integer) and image.dtype != bool:
            # (integers are finite, and high > low: only float input can hold NaN or inf)
            np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints."""
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(float(v) for v in data["low"]), tuple(float(v) for v in data["high"]))
