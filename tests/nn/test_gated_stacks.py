"""The gated PixelCNN is causal in raster order and has no blind spot."""

import torch

from pixgen.nn.pixelcnn import GatedPixelCNN


def dependence(net, size: int, i: int, j: int, channels: int = 1) -> torch.Tensor:
    """Which input pixels the output at (i, j) depends on (by gradient)."""
    x = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    net(x)[0, :, i, j].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def test_causal_and_no_blind_spot():
    torch.manual_seed(0)
    net = GatedPixelCNN(in_channels=1, out_channels=4, width=8, layers=4, kernel=3).double()
    size = 9
    for i, j in [(0, 0), (0, 5), (4, 4), (8, 8), (5, 0)]:
        seen = dependence(net, size, i, j)
        order = torch.arange(size * size).view(size, size)
        here = i * size + j
        assert not seen[order >= here].any(), f"pixel ({i}, {j}) sees itself or the future"
        # every earlier pixel within the receptive field is seen, including the upper right
        # that the original PixelCNN's masked convolutions miss (the "blind spot")
        for di, dj in [(0, -1), (-1, 0), (-1, 1), (-1, 3), (-2, 4), (-1, -3)]:
            a, b = i + di, j + dj
            if 0 <= a < size and 0 <= b < size:
                assert seen[a, b], f"pixel ({i}, {j}) does not see ({a}, {b})"


def test_rgb_input_is_causal_across_pixels():
    torch.manual_seed(0)
    net = GatedPixelCNN(in_channels=3, out_channels=30, width=8, layers=2, kernel=5).double()
    seen = dependence(net, 6, 3, 2, channels=3)
    assert not seen[3, 2:].any() and not seen[4:].any()
    assert seen[3, 1] and seen[2, 4]


def test_cropping_rows_gives_the_same_outputs():
    """Sampling runs the network on the rows drawn so far: that must not change them."""
    torch.manual_seed(0)
    net = GatedPixelCNN(in_channels=1, out_channels=4, width=8, layers=3, num_classes=3)
    x = torch.randn(2, 1, 8, 8)
    labels = torch.tensor([0, 2])
    full = net(x, labels)
    assert torch.allclose(net(x[:, :, :5], labels), full[:, :, :5], atol=1e-6)
