"""ShuffleConv: sub-pixel upsampling with ICNR (Aitken et al. 2017)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthmed.nn.blocks import ShuffleConv


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_icnr_equals_nearest_neighbour_upsampling(dims: int, bias: bool) -> None:
    block = ShuffleConv(dims, 3, 2, bias=bias)
    x = torch.randn(2, 3, *([5] * dims))
    with torch.no_grad():
        y = block(x)
        w = block.conv.weight[:: 2**dims]
        b = block.conv.bias[:: 2**dims] if bias else None
        conv_fn = F.conv3d if dims == 3 else F.conv2d
        expected = F.interpolate(conv_fn(x, w, b, padding=1), scale_factor=2, mode="nearest")
    assert y.shape == (2, 2, *([10] * dims))
    torch.testing.assert_close(y, expected)
    # every 2^d block of the output is constant
    blocks = y.reshape(2, 2, *[v for _ in range(dims) for v in (5, 2)])
    first = blocks[(slice(None), slice(None)) + (slice(None), slice(0, 1)) * dims]
    torch.testing.assert_close(blocks, first.expand_as(blocks))


def test_without_icnr_blocks_vary() -> None:
    block = ShuffleConv(3, 3, 2, icnr=False)
    with torch.no_grad():
        y = block(torch.randn(1, 3, 4, 4, 4))
    assert not torch.allclose(y[..., 0::2, :, :], y[..., 1::2, :, :])


def test_shuffle_conv_paper_block_size() -> None:
    block = ShuffleConv(3, 256, 128)
    assert sum(p.numel() for p in block.parameters()) == 7_077_888  # paper 000 Fig. S2


def test_shuffle_conv_scale_and_kernel() -> None:
    block = ShuffleConv(2, 4, 3, scale=3, kernel_size=5)
    assert block(torch.randn(1, 4, 3, 2)).shape == (1, 3, 9, 6)
    with pytest.raises(ValueError, match="odd"):
        ShuffleConv(2, 4, 3, kernel_size=4)
