"""The U-Net of Ronneberger et al. (2015), for 2D images or 3D volumes.

Encoder levels of two 3x3 convolutions (+ normalisation + ReLU) with 2x max-pool
downsampling that doubles the channels, a bottleneck, a decoder whose transposed
convolutions upsample and halve the channels before the matching encoder features are
**concatenated**, and a 1x1 head to class logits. Convolutions are padded ("same"), and any
input size is accepted: the input is padded to a multiple of ``2**depth`` and the output
cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_unet.core.config import ModelConfig
from napari_unet.core.errors import InputError


class ChannelLayerNorm(nn.Module):
    """Normalise across channels independently at every pixel (voxel).

    Unlike GroupNorm, nothing is pooled over space, so the output at a pixel depends only on
    its receptive field: this is what makes tiled prediction equal whole-image prediction.
    Unlike BatchNorm, it behaves the same with a batch of 1 as with 64.
    """

    def __init__(self, channels: int, spatial_dims: int, eps: float = 1e-5) -> None:
        super().__init__()
        shape = (1, channels) + (1,) * spatial_dims
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # One fused layer-norm kernel over the channels-last view, instead of the textbook
        # formula's eight elementwise passes over the activations: those passes, not the
        # convolutions, dominated the step (benchmarks/bench_gpu.py: training +36 % on an
        # H100; bench_core.py on 2 CPU cores: training 49 -> 60 patches/s, prediction
        # 0.55 -> 0.87 MP/s). Same statistics (biased variance, eps inside the root); the
        # weights keep their (1, C, 1, ...) shape so saved models load unchanged.
        channels = x.shape[1]
        normed = F.layer_norm(x.movedim(1, -1), (channels,), self.weight.reshape(channels),
                              self.bias.reshape(channels), self.eps)
        return normed.movedim(-1, 1)


def _norm(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    if kind == "layer":
        return ChannelLayerNorm(channels, spatial_dims)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    return nn.Identity()


def _conv(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by normalisation and ReLU; optionally residual.

    Convolutions before a normalisation have no bias, except the very first of the network
    when ``first_bias`` is set: layer normalisation across channels at each pixel divides
    out the scale of ``conv(x)``, so without a bias the first layer sees the contrast of a
    3x3 neighbourhood but not its brightness (a flat dim patch looks like a flat bright
    one). The bias is what lets brightness through (``ModelConfig.absolute_intensity``).
    """

    def __init__(
        self, in_ch: int, out_ch: int, *, norm: str, spatial_dims: int, residual: bool,
        first_bias: bool = False,
    ) -> None:
        super().__init__()
        conv = _conv(spatial_dims)
        bias = norm == "none"
        self.conv1 = conv(in_ch, out_ch, 3, padding=1, bias=bias or first_bias)
        self.norm1 = _norm(norm, out_ch, spatial_dims)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1, bias=bias)
        self.norm2 = _norm(norm, out_ch, spatial_dims)
        self.skip: nn.Module | None = None
        if residual:
            self.skip = conv(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.skip is not None:
            y = y + self.skip(x)
        return F.relu(y)


class UNet(nn.Module):
    """U-Net mapping ``(N, C, *spatial)`` to ``(N, num_classes, *spatial)`` logits.

    ``C`` is ``config.network_in_channels``: the image's channels, times the slices per
    sample for a 2D model with Z context.

    Build it with :func:`build_unet`. Logit channel ``k`` belongs to label id ``k + 1``
    (see :mod:`napari_unet.core.labels`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        sd, norm, res = config.spatial_dims, config.norm, config.residual
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.encoders = nn.ModuleList()
        in_ch = config.network_in_channels
        for level, w in enumerate(widths[:-1]):
            self.encoders.append(ConvBlock(
                in_ch, w, norm=norm, spatial_dims=sd, residual=res,
                first_bias=level == 0 and config.sees_absolute_intensity,
            ))
            in_ch = w
        pool = nn.MaxPool2d if sd == 2 else nn.MaxPool3d
        factors = config.pool_factors
        self.pools = nn.ModuleList(pool(f, stride=f) for f in factors)
        self.bottleneck = ConvBlock(
            widths[-2], widths[-1], norm=norm, spatial_dims=sd, residual=res
        )
        up = nn.ConvTranspose2d if sd == 2 else nn.ConvTranspose3d
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(config.depth)):
            f = factors[level]
            self.upsamplers.append(up(widths[level + 1], widths[level], f, stride=f))
            # input = upsampled features + concatenated skip features
            self.decoders.append(
                ConvBlock(2 * widths[level], widths[level], norm=norm, spatial_dims=sd,
                          residual=res)
            )
        self.head = _conv(sd)(widths[0], config.num_classes, 1)

    @property
    def receptive_radii(self) -> tuple[int, ...]:
        """Per spatial axis, an upper bound on how far (in pixels) an output pixel can see.

        A 3x3 conv at a level whose pixels are ``s`` input pixels apart adds ``s``, a 2x pool
        there adds ``s``; transposed convolutions add nothing. The deepest path is the
        longest: two convs per level on the way down and two on the way up, the pools, and
        the two bottleneck convs.
        """
        radii = []
        for axis in range(self.config.spatial_dims):
            scale, radius = 1, 0
            for level in self.config.pool_factors:
                factor = level[axis]
                radius += 4 * scale + (scale if factor == 2 else 0)
                scale *= factor
            radii.append(radius + 2 * scale)
        return tuple(radii)

    @property
    def receptive_radius(self) -> int:
        """The largest of :attr:`receptive_radii`."""
        return max(self.receptive_radii)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict class logits for a batch; input of any spatial size."""
        cfg = self.config
        if x.ndim != 2 + cfg.spatial_dims or x.shape[1] != cfg.network_in_channels:
            expected = "(N, C, Y, X)" if cfg.spatial_dims == 2 else "(N, C, Z, Y, X)"
            raise InputError(
                f"the U-Net expects input {expected} with C={cfg.network_in_channels}, "
                f"got shape {tuple(x.shape)}"
            )
        spatial = x.shape[2:]
        pads = [(-s) % m for s, m in zip(spatial, cfg.size_multiples)]
        if any(pads):
            # F.pad wants (last_lo, last_hi, ..., first_lo, first_hi); pad at the far side.
            pad_arg: list[int] = []
            for p in reversed(pads):
                pad_arg += [0, p]
            mode = "reflect" if all(p < s for p, s in zip(pads, spatial)) else "replicate"
            x = F.pad(x, pad_arg, mode=mode)

        skips = []
        for encoder, pool in zip(self.encoders, self.pools):
            x = encoder(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        x = self.head(x)

        if any(pads):
            x = x[(slice(None), slice(None), *(slice(0, s) for s in spatial))]
        return x


def build_unet(config: ModelConfig | None = None) -> UNet:
    """Build a U-Net from a :class:`~napari_unet.core.config.ModelConfig`.

    Parameters
    ----------
    config
        Model shape; the default is a small 2D single-channel, two-class network.

    Returns
    -------
    UNet
        A freshly initialised network on the CPU.
    """
    return UNet(config or ModelConfig())
