"""The fast superpixel ops against a slow, obvious reference (loops over the 9 offsets)."""

import pytest
import torch

from spxseg.models import superpixel_ops as ops

OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def neighbour_index(h, w, gh, gw, cell, dy, dx):
    """For offset (dy, dx): the neighbour cell (ky, kx) of every pixel, and whether it is in the grid."""
    ys = torch.arange(h).view(h, 1).expand(h, w)
    xs = torch.arange(w).view(1, w).expand(h, w)
    ky, kx = ys // cell + dy, xs // cell + dx
    inside = (ky >= 0) & (ky < gh) & (kx >= 0) & (kx < gw)
    return ky.clamp(0, gh - 1), kx.clamp(0, gw - 1), inside


def ref_neighbor_logits(pix, sp, cell):
    b, c, h, w = pix.shape
    gh, gw = sp.shape[-2:]
    out = []
    for dy, dx in OFFSETS:
        ky, kx = neighbour_index(h, w, gh, gw, cell, dy, dx)[:2]
        inside = neighbour_index(h, w, gh, gw, cell, dy, dx)[2]
        dots = (pix * sp[:, :, ky, kx]).sum(1)  # (B, H, W)
        out.append(dots.masked_fill(~inside, float("-inf")))
    return torch.stack(out, 1)


def ref_project(assoc, values):
    b, _, h, w = assoc.shape
    gh, gw = values.shape[-2:]
    cell = h // gh
    out = 0
    for j, (dy, dx) in enumerate(OFFSETS):
        ky, kx, inside = neighbour_index(h, w, gh, gw, cell, dy, dx)
        out = out + assoc[:, j : j + 1] * values[:, :, ky, kx] * inside
    return out


def ref_pool(assoc, pix, cell, mask=None, eps=1e-6):
    b, c, h, w = pix.shape
    gh, gw = h // cell, w // cell
    if mask is not None:
        assoc = assoc * mask
    total = torch.zeros(b, c, gh * gw, dtype=pix.dtype)
    mass = torch.zeros(b, 1, gh * gw, dtype=pix.dtype)
    for j, (dy, dx) in enumerate(OFFSETS):
        ky, kx, inside = neighbour_index(h, w, gh, gw, cell, dy, dx)
        weight = assoc[:, j : j + 1] * inside  # (B, 1, H, W)
        target = (ky * gw + kx).flatten()  # superpixel each pixel sends to
        total = total.index_add(2, target, (weight * pix).flatten(2))
        mass = mass.index_add(2, target, weight.flatten(2))
    return (total / (mass + eps)).view(b, c, gh, gw)


def random_assoc(b, gh, gw, cell, generator):
    """Random association rows summing to 1 over the neighbours inside the grid."""
    logits = torch.randn(b, 9, gh * cell, gw * cell, generator=generator, dtype=torch.float64)
    sp = torch.zeros(b, 1, gh, gw, dtype=torch.float64)
    invalid = torch.isinf(ref_neighbor_logits(torch.zeros(b, 1, gh * cell, gw * cell, dtype=torch.float64), sp, cell))
    return logits.masked_fill(invalid, float("-inf")).softmax(1)


GRIDS = [(1, 1), (1, 5), (3, 4), (6, 6)]
CELLS = [1, 2, 4]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("cell", CELLS)
def test_ops_match_reference_values_and_gradients(grid, cell):
    gh, gw = grid
    g = torch.Generator().manual_seed(gh * 100 + gw * 10 + cell)
    b, c, k = 2, 3, 4
    h, w = gh * cell, gw * cell
    pix = torch.randn(b, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    sp = torch.randn(b, c, gh, gw, generator=g, dtype=torch.float64, requires_grad=True)
    values = torch.randn(b, k, gh, gw, generator=g, dtype=torch.float64, requires_grad=True)
    assoc = random_assoc(b, gh, gw, cell, g).requires_grad_(True)
    mask = (torch.rand(b, 1, h, w, generator=g) > 0.3).double()

    for fast, ref, inputs in [
        (lambda p, s: ops.neighbor_logits(p, s, cell), lambda p, s: ref_neighbor_logits(p, s, cell), (pix, sp)),
        (ops.project, ref_project, (assoc, values)),
        (lambda a, p: ops.pool(a, p, cell, mask), lambda a, p: ref_pool(a, p, cell, mask), (assoc, pix)),
        (lambda a, p: ops.pool(a, p, cell), lambda a, p: ref_pool(a, p, cell), (assoc, pix)),
    ]:
        out_fast, out_ref = fast(*inputs), ref(*inputs)
        assert out_fast.shape == out_ref.shape
        torch.testing.assert_close(out_fast, out_ref, rtol=1e-10, atol=1e-10)
        # gradients through finite entries with a random upstream gradient
        upstream = torch.randn(out_ref.shape, generator=g, dtype=torch.float64)
        finite = torch.isfinite(out_ref)
        grads_fast = torch.autograd.grad((out_fast[finite] * upstream[finite]).sum(), inputs)
        grads_ref = torch.autograd.grad((out_ref[finite] * upstream[finite]).sum(), inputs)
        for gf, gr in zip(grads_fast, grads_ref):
            torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-10)


def test_gradcheck_tiny():
    g = torch.Generator().manual_seed(0)
    cell, gh, gw = 2, 2, 3
    pix = torch.randn(1, 2, gh * cell, gw * cell, generator=g, dtype=torch.float64, requires_grad=True)
    sp = torch.randn(1, 2, gh, gw, generator=g, dtype=torch.float64, requires_grad=True)
    values = torch.randn(1, 3, gh, gw, generator=g, dtype=torch.float64, requires_grad=True)
    assoc = random_assoc(1, gh, gw, cell, g).requires_grad_(True)

    def softmax_assoc(p, s):  # finite end to end: the association as the model computes it
        return ops.neighbor_logits(p, s, cell).softmax(1)

    assert torch.autograd.gradcheck(softmax_assoc, (pix, sp))
    assert torch.autograd.gradcheck(ops.project, (assoc, values))
    assert torch.autograd.gradcheck(lambda a, p: ops.pool(a, p, cell), (assoc, pix))


def test_association_rows_sum_to_one_and_masked_neighbours_get_zero():
    g = torch.Generator().manual_seed(1)
    cell, gh, gw = 2, 3, 4
    pix = torch.randn(2, 5, gh * cell, gw * cell, generator=g)
    sp = torch.randn(2, 5, gh, gw, generator=g)
    logits = ops.neighbor_logits(pix, sp, cell)
    assoc = logits.softmax(1)
    torch.testing.assert_close(assoc.sum(1), torch.ones(2, gh * cell, gw * cell))
    # top-left pixel: only neighbours (0,0), (0,1), (1,0), (1,1) -> j = 4, 5, 7, 8 exist
    assert torch.isinf(logits[:, [0, 1, 2, 3, 6], 0, 0]).all()
    assert (assoc[:, [0, 1, 2, 3, 6], 0, 0] == 0).all()
    assert torch.isfinite(logits[:, [4, 5, 7, 8], 0, 0]).all()
    # a 1x1 grid leaves only the centre
    one = ops.neighbor_logits(pix[..., :cell, :cell], sp[..., :1, :1], cell).softmax(1)
    assert (one[:, 4] == 1).all() and (one.sum(1) == 1).all()


def test_padded_pixels_do_not_change_pool():
    g = torch.Generator().manual_seed(2)
    cell, gh, gw = 2, 3, 3
    h, w = gh * cell, gw * cell
    pix = torch.randn(1, 4, h, w, generator=g, dtype=torch.float64)
    assoc = random_assoc(1, gh, gw, cell, g)
    # pad one row and one column of cells with garbage pixels and association, masked out
    big_pix = torch.randn(1, 4, h + cell, w + cell, generator=g, dtype=torch.float64) * 100
    big_pix[..., :h, :w] = pix
    big_assoc = random_assoc(1, gh + 1, gw + 1, cell, g)
    mask = torch.zeros(1, 1, h + cell, w + cell, dtype=torch.float64)
    mask[..., :h, :w] = 1
    # the real pixels keep their association to real superpixels; mass towards the padding cells is dropped
    big_assoc[..., :h, :w] = assoc
    pooled = ops.pool(big_assoc, big_pix, cell, mask)[..., :gh, :gw]
    torch.testing.assert_close(pooled, ops.pool(assoc, pix, cell))
    unmasked = ops.pool(big_assoc, big_pix, cell)[..., :gh, :gw]
    assert not torch.allclose(unmasked, pooled)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="not a multiple of the cell size"):
        ops.to_cells(torch.zeros(1, 2, 5, 4), 2)
    with pytest.raises(ValueError, match="does not match a 2x2 superpixel grid"):
        ops.neighbor_logits(torch.zeros(1, 2, 6, 4), torch.zeros(1, 2, 2, 2), 2)
