import pytest
import torch

from napari_unet.core.config import ModelConfig
from napari_unet.core.errors import InputError
from napari_unet.core.unet import ChannelLayerNorm, build_unet


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 37, 53), (1, 1, 5, 3)])
def test_any_2d_size_gives_same_size_logits(shape):
    net = build_unet(ModelConfig(depth=3, base_channels=8, num_classes=3))
    out = net(torch.rand(shape))
    assert out.shape == (shape[0], 3, *shape[2:])


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("norm", ["layer", "group", "batch", "none"])
def test_options_build_and_run(residual, norm):
    net = build_unet(ModelConfig(in_channels=2, depth=2, base_channels=8, residual=residual,
                                 norm=norm))
    assert net(torch.rand(2, 2, 20, 24)).shape == (2, 2, 20, 24)


def test_3d_volume():
    net = build_unet(ModelConfig(spatial_dims=3, depth=2, base_channels=4))
    assert net(torch.rand(1, 1, 9, 17, 16)).shape == (1, 2, 9, 17, 16)


def test_encoder_doubles_channels_and_decoder_concatenates():
    net = build_unet(ModelConfig(depth=3, base_channels=8))
    assert [e.conv1.out_channels for e in net.encoders] == [8, 16, 32]
    assert net.bottleneck.conv1.out_channels == 64
    # decoder input = upsampled (halved) + skip: twice the level's width
    assert [d.conv1.in_channels for d in net.decoders] == [64, 32, 16]
    assert [u.out_channels for u in net.upsamplers] == [32, 16, 8]


def test_wrong_input_shape_is_explained():
    net = build_unet(ModelConfig(in_channels=1))
    with pytest.raises(InputError, match="C=1"):
        net(torch.rand(1, 3, 32, 32))


def test_layer_norm_is_per_pixel():
    # Changing one pixel changes only that pixel's output: no statistic spans space or batch.
    norm = ChannelLayerNorm(4, spatial_dims=2)
    x = torch.rand(2, 4, 8, 8)
    y = x.clone()
    y[1, :, 3, 3] += 5
    diff = (norm(x) - norm(y)).abs().sum(dim=1)
    assert diff[0].max() == 0
    assert torch.count_nonzero(diff[1]) == 1


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_layer_norm_matches_the_textbook_formula(spatial_dims, layout):
    # The fused kernel must compute exactly what the per-pixel formula says, values and
    # gradients, in either memory layout (CUDA training runs channels-last).
    torch.manual_seed(0)
    norm = ChannelLayerNorm(6, spatial_dims=spatial_dims)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 6, *(5,) * spatial_dims) * 3 + 1
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last if spatial_dims == 2
                         else torch.channels_last_3d)
    x.requires_grad_(True)
    mean = x.mean(dim=1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=1, keepdim=True)
    expected = (x - mean) * torch.rsqrt(var + norm.eps) * norm.weight + norm.bias
    out = norm(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, norm.weight, norm.bias], upstream)
    want = torch.autograd.grad(expected, [x, norm.weight, norm.bias], upstream)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_receptive_radius_bounds_the_true_field():
    net = build_unet(ModelConfig(depth=3, base_channels=4)).eval()
    x = torch.rand(1, 1, 160, 160, requires_grad=True)
    net(x)[0, :, 80, 80].sum().backward()
    ys, xs = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
    reach = max(80 - ys.min(), ys.max() - 80, 80 - xs.min(), xs.max() - 80)
    assert reach <= net.receptive_radius
    assert reach > net.receptive_radius / 2  # and the bound is not wildly loose


def test_bad_config_is_refused():
    with pytest.raises(InputError, match="num_classes"):
        ModelConfig(num_classes=1)
