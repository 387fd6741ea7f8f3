"""Pixel <-> superpixel operations on a regular grid of cells.

The image of pixel features (B, C, H, W) is cut into a grid of Gh x Gw cells of
``cell x cell`` pixels (H = Gh * cell, W = Gw * cell). Superpixel k lives on cell k, and a
pixel may only associate with the 9 superpixels of the 3x3 cells around its own cell,
neighbour index ``j = (dy + 1) * 3 + (dx + 1)`` for dy, dx in {-1, 0, 1}. Neighbours
outside the grid are masked.

Every op works in the *cell layout*: pixels grouped by cell, (B, Gh, Gw, n, C) with
``n = cell * cell``, and the 9 neighbour superpixels of each cell gathered by padding
and slicing the (small) superpixel grid, (B, Gh, Gw, 9, C). Superpixels are kept
channels-last, (B, Gh, Gw, C), so that gathering and folding need no permutes. Pixel features are never
copied 9 times; per-cell batched matmuls do the work. The ``*_cells`` functions take
and return the cell layout so that callers running several iterations (the tokenizer)
reorganise the pixel features once; the public functions take and return (B, ·, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# (dy, dx) of neighbour j, in j order
OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def to_cells(x: Tensor, cell: int) -> Tensor:
    """(B, C, H, W) -> (B, Gh, Gw, cell*cell, C)."""
    b, c, h, w = x.shape
    if h % cell or w % cell:
        raise ValueError(f"feature size {h}x{w} is not a multiple of the cell size {cell}")
    gh, gw = h // cell, w // cell
    x = x.reshape(b, c, gh, cell, gw, cell).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, gh, gw, cell * cell, c)


def from_cells(x: Tensor, cell: int) -> Tensor:
    """(B, Gh, Gw, cell*cell, C) -> (B, C, Gh*cell, Gw*cell)."""
    b, gh, gw, _, c = x.shape
    x = x.reshape(b, gh, gw, cell, cell, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, gh * cell, gw * cell)


def gather_neighbors(sp: Tensor) -> Tensor:
    """Superpixels (B, Gh, Gw, C), channels last -> the 9 neighbours of every cell (B, Gh, Gw, 9, C).

    Neighbours outside the grid are zero.
    """
    gh, gw = sp.shape[1:3]
    padded = F.pad(sp, (0, 0, 1, 1, 1, 1))
    views = [padded[:, 1 + dy : 1 + dy + gh, 1 + dx : 1 + dx + gw] for dy, dx in OFFSETS]
    return torch.stack(views, dim=3)


def neighbor_valid(gh: int, gw: int, device: torch.device | None = None) -> Tensor:
    """Boolean (Gh, Gw, 9): whether neighbour j of each cell lies inside the grid.

    Built from ``arange`` on ``device`` (no host-to-device copy, so nothing synchronises).
    """
    j = torch.arange(9, device=device)
    dy, dx = (j // 3 - 1).view(1, 1, 9), (j % 3 - 1).view(1, 1, 9)
    ys = torch.arange(gh, device=device).view(gh, 1, 1)
    xs = torch.arange(gw, device=device).view(1, gw, 1)
    return (ys + dy >= 0) & (ys + dy < gh) & (xs + dx >= 0) & (xs + dx < gw)


def fold_neighbors(contrib: Tensor) -> Tensor:
    """Send per-cell contributions to their neighbours and sum: (B, Gh, Gw, 9, *) -> (B, Gh, Gw, *).

    Superpixel (y, x) receives ``contrib[y - dy, x - dx, j]`` for every neighbour offset j;
    contributions towards cells outside the grid fall off the border. Any strides.

    Eager: the centre contributions plus 8 in-place adds into shifted windows (no padded copy; 3x faster
    on CPU). Compiled: one pad and 9 shifted views, which the compiler fuses into a single kernel.
    """
    gh, gw = contrib.shape[1:3]
    if torch.compiler.is_compiling():
        padded = F.pad(contrib, (0, 0) * (contrib.dim() - 3) + (1, 1, 1, 1))  # (B, Gh + 2, Gw + 2, 9, *)
        out = None
        for j, (dy, dx) in enumerate(OFFSETS):
            shifted = padded[:, 1 - dy : 1 - dy + gh, 1 - dx : 1 - dx + gw, j]
            out = shifted if out is None else out + shifted
        return out
    out = contrib[:, :, :, 4].clone()
    for j, (dy, dx) in enumerate(OFFSETS):
        if j == 4:
            continue
        # receivers y in [max(dy, 0), gh + min(dy, 0)) get senders y - dy
        ry, sy = slice(max(dy, 0), gh + min(dy, 0)), slice(max(-dy, 0), gh + min(-dy, 0))
        rx, sx = slice(max(dx, 0), gw + min(dx, 0)), slice(max(-dx, 0), gw + min(-dx, 0))
        out[:, ry, rx].add_(contrib[:, sy, sx, j])  # in place on a view (no __setitem__ copy back)
    return out


# --------------------------------------------------------------------------- cell layout


def neighbor_logits_cells(pix_cells: Tensor, neighbors: Tensor, valid: Tensor) -> Tensor:
    """Dot products of every pixel with its 9 neighbour superpixels.

    Associations in cell layout are neighbour-major, (..., 9, n): a softmax over the
    neighbours then runs over a non-innermost axis, which vectorises over the n pixels
    (over 10x faster on CPU than a softmax over an innermost axis of size 9).

    Args:
        pix_cells: (B, Gh, Gw, *, n, d) pixel features in cell layout.
        neighbors: (B, Gh, Gw, *, 9, d), e.g. from :func:`gather_neighbors` (``*``: optional heads).
        valid: (Gh, Gw, 9) from :func:`neighbor_valid`.
    Returns:
        (B, Gh, Gw, *, 9, n) logits, ``-inf`` for neighbours outside the grid.
    """
    inner = neighbors.shape[3:-2]
    logits = neighbors @ pix_cells.transpose(-1, -2)
    mask = valid.view(valid.shape[0], valid.shape[1], *([1] * len(inner)), 9, 1)
    return logits.masked_fill(~mask, float("-inf"))


def project_cells(assoc_cells: Tensor, neighbor_values: Tensor) -> Tensor:
    """(B, Gh, Gw, *, 9, n) x (B, Gh, Gw, *, 9, K) -> (B, Gh, Gw, *, n, K)."""
    return assoc_cells.transpose(-1, -2) @ neighbor_values


def pooled_sums(assoc_cells: Tensor, pix_cells: Tensor) -> tuple[Tensor, Tensor]:
    """Association-weighted sums of pixel values per superpixel, and the weight each receives.

    Args:
        assoc_cells: (B, Gh, Gw, *, 9, n), already multiplied by any validity mask.
        pix_cells: (B, Gh, Gw, *, n, d).
    Returns:
        total (B, Gh, Gw, *, d) and mass (B, Gh, Gw, *, 1).
    """
    weighted = assoc_cells @ pix_cells  # (B, Gh, Gw, *, 9, d): what each cell sends each neighbour
    mass = assoc_cells.sum(dim=-1, keepdim=True)  # (B, Gh, Gw, *, 9, 1)
    # the neighbour axis next to the grid (a view), one fold for every head at once
    return fold_neighbors(weighted.movedim(-2, 3)), fold_neighbors(mass.movedim(-2, 3))


def pool_cells(assoc_cells: Tensor, pix_cells: Tensor, eps: float = 1e-6) -> Tensor:
    """Association-weighted mean of pixel values per superpixel: (B, Gh, Gw, *, d)."""
    total, mass = pooled_sums(assoc_cells, pix_cells)
    return total / (mass + eps)


def assoc_to_cells(assoc: Tensor, cell: int) -> Tensor:
    """Association (B, 9, H, W) -> neighbour-major cell layout (B, Gh, Gw, 9, n)."""
    return to_cells(assoc, cell).transpose(-1, -2)


def assoc_from_cells(assoc_cells: Tensor, cell: int) -> Tensor:
    """Neighbour-major cell layout (B, Gh, Gw, 9, n) -> association (B, 9, H, W)."""
    return from_cells(assoc_cells.transpose(-1, -2), cell)


# --------------------------------------------------------------------------- public API


def neighbor_logits(pix: Tensor, sp: Tensor, cell: int) -> Tensor:
    """Dot products between each pixel and its 9 neighbour superpixels.

    Args:
        pix: (B, C, H, W) pixel features, H = Gh * cell, W = Gw * cell.
        sp: (B, C, Gh, Gw) superpixel features.
        cell: cell size in pixels.
    Returns:
        (B, 9, H, W) logits, ``-inf`` where the neighbour lies outside the grid.
    """
    gh, gw = sp.shape[-2:]
    _check_grid(pix, gh, gw, cell)
    valid = neighbor_valid(gh, gw, pix.device)
    neighbors = gather_neighbors(sp.permute(0, 2, 3, 1))
    return assoc_from_cells(neighbor_logits_cells(to_cells(pix, cell), neighbors, valid), cell)


def project(assoc: Tensor, sp_values: Tensor) -> Tensor:
    """Project superpixel values to pixels through the association.

    Args:
        assoc: (B, 9, H, W) association of each pixel with its neighbours (rows sum to 1).
        sp_values: (B, K, Gh, Gw).
    Returns:
        (B, K, H, W) with ``out[:, :, p] = sum_j assoc[:, j, p] * sp_values[:, :, n_j(p)]``.
    """
    gh, gw = sp_values.shape[-2:]
    cell = assoc.shape[-2] // gh
    _check_grid(assoc, gh, gw, cell)
    neighbors = gather_neighbors(sp_values.permute(0, 2, 3, 1))
    return from_cells(project_cells(assoc_to_cells(assoc, cell), neighbors), cell)


def pool(
    assoc: Tensor, pix_values: Tensor, cell: int, mask: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """Association-weighted mean of pixel values over the pixels reaching each superpixel.

    Args:
        assoc: (B, 9, H, W) association of each pixel with its neighbours.
        pix_values: (B, C, H, W).
        cell: cell size in pixels.
        mask: optional (B, 1, H, W) validity (1 = real pixel, 0 = padding).
        eps: added to the total weight of each superpixel.
    Returns:
        (B, C, Gh, Gw).
    """
    if mask is not None:
        assoc = assoc * mask.to(assoc.dtype)
    pooled = pool_cells(assoc_to_cells(assoc, cell), to_cells(pix_values, cell), eps)
    return pooled.permute(0, 3, 1, 2)


def _check_grid(x: Tensor, gh: int, gw: int, cell: int) -> None:
    h, w = x.shape[-2:]
    if h != gh * cell or w != gw * cell:
        raise ValueError(
            f"pixel map {h}x{w} does not match a {gh}x{gw} superpixel grid with cell {cell} "
            f"(expected {gh * cell}x{gw * cell})"
        )
