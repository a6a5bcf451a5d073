"""FuseAnyPart Mask-based Fusion Module, paper eq. 3 (models/fuseanypart/fusion.py).

Reference grids are built by hand: source token (r, c) carries r * 16 + c in dim 0 and the source id in
dim 1, so every fused cell says exactly which source cell it came from. Nearest resizing is written out
with integer arithmetic: target cell i of a box of size out takes source cell floor(i * in / out).
"""
from __future__ import annotations

import pytest
import torch

from models.fuseanypart.fusion import GRID, FapCondition, box_to_cells, fuse_grids, make_condition

D = 4
TARGET_CLS = 7.0


def _target(b=1):
    """Target tokens: CLS = 7 in every dim, all 256 patch tokens zero."""
    t = torch.zeros(b, 1 + GRID * GRID, D)
    t[:, 0] = TARGET_CLS
    return t


def _source(src_id, b=1):
    """Source tokens: patch (r, c) = [r * 16 + c, src_id, 0, 0]; CLS = -1."""
    t = torch.zeros(b, 1 + GRID * GRID, D)
    t[:, 0] = -1.0
    for r in range(GRID):
        for c in range(GRID):
            t[:, 1 + r * GRID + c, 0] = r * GRID + c
    t[:, 1:, 1] = float(src_id)
    return t


def _box(r0, c0, r1, c1, inset=0.01):
    """A normalised box whose truncated cells are (r0, c0, r1, c1): each edge a little past the cell line."""
    return [r0 / GRID + inset, c0 / GRID + inset, r1 / GRID + inset, c1 / GRID + inset]


def _paste(grid, src_id, src_cells, tgt_cells):
    """Write into grid [16, 16, D] the expected nearest-resized paste, with integer formulas only."""
    sr0, sc0, sr1, sc1 = src_cells
    tr0, tc0, tr1, tc1 = tgt_cells
    h_in, w_in, h_out, w_out = sr1 - sr0, sc1 - sc0, tr1 - tr0, tc1 - tc0
    for i in range(h_out):
        for j in range(w_out):
            r = sr0 + (i * h_in) // h_out
            c = sc0 + (j * w_in) // w_out
            grid[tr0 + i, tc0 + j] = torch.tensor([r * GRID + c, src_id, 0.0, 0.0])


def _grid(tokens, i=0):
    return tokens[i, 1:].reshape(GRID, GRID, D)


# ---------------------------------------------------------------- box_to_cells

def test_box_to_cells_truncates_box_times_16():
    assert box_to_cells([0.125, 0.25, 0.375, 0.75]) == (2, 4, 6, 12)
    # 0.13*16 = 2.08, 0.26*16 = 4.16, 0.49*16 = 7.84, 0.99*16 = 15.84: truncated, never rounded up.
    assert box_to_cells([0.13, 0.26, 0.49, 0.99]) == (2, 4, 7, 15)


def test_box_to_cells_box_touching_far_edge_ends_at_grid_size():
    assert box_to_cells([0.5, 0.0, 1.0, 1.0]) == (8, 0, 16, 16)


def test_box_to_cells_zero_size_box_gets_the_one_cell_containing_it():
    assert box_to_cells([0.5, 0.5, 0.5, 0.5]) == (8, 8, 9, 9)
    # Inside a single cell (8.16 .. 8.32): still one cell.
    assert box_to_cells([0.51, 0.51, 0.52, 0.52]) == (8, 8, 9, 9)


def test_box_to_cells_degenerate_box_on_far_edge_stays_on_grid():
    assert box_to_cells([1.0, 1.0, 1.0, 1.0]) == (15, 15, 16, 16)


def test_box_to_cells_clips_coordinates_outside_0_1():
    assert box_to_cells([-0.1, -0.2, 1.2, 1.5]) == (0, 0, 16, 16)


def test_box_to_cells_accepts_float32_tensor():
    assert box_to_cells(torch.tensor([0.125, 0.25, 0.375, 0.75], dtype=torch.float32)) == (2, 4, 6, 12)


def test_box_to_cells_rejects_inverted_box():
    with pytest.raises(ValueError, match="inverted"):
        box_to_cells([0.6, 0.1, 0.4, 0.3])


# ---------------------------------------------------------------- fuse_grids

def test_fusion_pastes_source_box_resized_into_target_box():
    target, source = _target(), _source(3)
    src_cells, tgt_cells = (2, 3, 6, 9), (1, 4, 3, 12)  # 4 x 6 cells -> 2 x 8 cells
    out = fuse_grids(target, {"eyes": (source, torch.tensor([_box(*src_cells)]))},
                     {"eyes": torch.tensor([_box(*tgt_cells)])})
    expected = torch.zeros(GRID, GRID, D)
    _paste(expected, 3, src_cells, tgt_cells)
    assert torch.equal(_grid(out), expected)
    # Spot check of the integer formula itself: target cell (2, 11) <- source (2 + 1*4//2, 3 + 7*6//8) = (4, 8).
    assert _grid(out)[2, 11, 0].item() == 4 * GRID + 8


def test_fusion_keeps_target_cls_and_untouched_cells():
    target = torch.randn(1, 1 + GRID * GRID, D)
    out = fuse_grids(target, {"nose": (_source(1), [_box(5, 5, 8, 9)])}, {"nose": [_box(6, 6, 9, 10)]})
    assert torch.equal(out[:, 0], target[:, 0])
    keep = torch.ones(GRID, GRID, dtype=torch.bool)
    keep[6:9, 6:10] = False
    assert torch.equal(_grid(out)[keep], _grid(target)[keep])
    assert torch.all(_grid(out)[~keep][:, 1] == 1.0)


def test_fusion_three_parts_from_three_sources_land_in_their_boxes():
    target = _target()
    cells = {  # part: (source id, source cells, target cells); target boxes tiled like the authors' samples
        "eyes": (1, (3, 2, 6, 14), (4, 3, 7, 13)),
        "nose": (2, (6, 6, 10, 10), (7, 5, 10, 11)),
        "mouth": (3, (10, 4, 13, 12), (10, 4, 14, 12)),
    }
    sources = {p: (_source(sid), [_box(*sc)]) for p, (sid, sc, _) in cells.items()}
    tboxes = {p: [_box(*tc)] for p, (_, _, tc) in cells.items()}
    out = fuse_grids(target, sources, tboxes)
    expected = torch.zeros(GRID, GRID, D)
    for sid, sc, tc in cells.values():
        _paste(expected, sid, sc, tc)
    assert torch.equal(_grid(out), expected)
    assert torch.all(out[:, 0] == TARGET_CLS)
    for part, (sid, _, (r0, c0, r1, c1)) in cells.items():
        assert torch.all(_grid(out)[r0:r1, c0:c1, 1] == sid), part


def test_fusion_disabled_or_missing_part_keeps_target_features():
    target = _target()
    sources = {"eyes": (_source(1), [_box(3, 2, 6, 14)]), "nose": (_source(2), [_box(6, 6, 10, 10)]),
               "mouth": None}
    tboxes = {"eyes": [_box(4, 3, 7, 13)], "nose": [_box(7, 5, 10, 11)], "mouth": [_box(10, 4, 14, 12)]}
    out = fuse_grids(target, sources, tboxes, enabled={"eyes": True, "nose": False})
    expected = torch.zeros(GRID, GRID, D)
    _paste(expected, 1, (3, 2, 6, 14), (4, 3, 7, 13))
    assert torch.equal(_grid(out), expected)  # nose disabled, mouth has no source: both stay zero


def test_fusion_batch_items_use_their_own_boxes_and_sources():
    target = _target(2)
    source = torch.cat([_source(10), _source(11)])
    src_boxes = torch.tensor([_box(2, 3, 6, 9), _box(8, 1, 11, 4)])
    tgt_boxes = torch.tensor([_box(1, 4, 3, 12), _box(9, 9, 15, 14)])
    out = fuse_grids(target, {"mouth": (source, src_boxes)}, {"mouth": tgt_boxes})
    for i, (sid, sc, tc) in enumerate([(10, (2, 3, 6, 9), (1, 4, 3, 12)), (11, (8, 1, 11, 4), (9, 9, 15, 14))]):
        expected = torch.zeros(GRID, GRID, D)
        _paste(expected, sid, sc, tc)
        assert torch.equal(_grid(out, i), expected), i


def test_fusion_single_source_is_broadcast_to_the_target_batch():
    target = _target(2)
    tgt_boxes = torch.tensor([_box(1, 1, 4, 4), _box(10, 10, 12, 15)])
    out = fuse_grids(target, {"eyes": (_source(5), [_box(2, 2, 5, 6)])}, {"eyes": tgt_boxes})
    for i, tc in enumerate([(1, 1, 4, 4), (10, 10, 12, 15)]):
        expected = torch.zeros(GRID, GRID, D)
        _paste(expected, 5, (2, 2, 5, 6), tc)
        assert torch.equal(_grid(out, i), expected), i


def test_fusion_later_part_overwrites_earlier_where_target_boxes_overlap():
    target = _target()
    out = fuse_grids(target, {"eyes": (_source(1), [_box(2, 2, 6, 6)]), "nose": (_source(2), [_box(6, 6, 10, 10)])},
                     {"eyes": [_box(2, 2, 8, 8)], "nose": [_box(6, 6, 10, 10)]})
    g = _grid(out)
    assert torch.all(g[6:8, 6:8, 1] == 2.0)  # overlap: nose (pasted after eyes)
    assert torch.all(g[2:6, 2:8, 1] == 1.0) and torch.all(g[6:8, 2:6, 1] == 1.0)


def test_fusion_zero_size_source_box_fills_target_box_with_its_one_cell():
    out = fuse_grids(_target(), {"nose": (_source(4), [[0.3, 0.6, 0.3, 0.6]])}, {"nose": [_box(5, 5, 8, 9)]})
    # 0.3*16 = 4.8 -> row 4, 0.6*16 = 9.6 -> column 9.
    assert torch.all(_grid(out)[5:8, 5:9, 0] == 4 * GRID + 9)


def test_fusion_does_not_modify_inputs():
    target, source = _target(), _source(1)
    t0, s0 = target.clone(), source.clone()
    fuse_grids(target, {"eyes": (source, [_box(2, 2, 6, 6)])}, {"eyes": [_box(1, 1, 5, 5)]})
    assert torch.equal(target, t0) and torch.equal(source, s0)


def test_fusion_rejects_tokens_that_are_not_a_16x16_grid():
    with pytest.raises(ValueError, match=r"\[B, 257, D\]"):
        fuse_grids(torch.zeros(1, 50, D), {}, {})
    with pytest.raises(ValueError, match="same\\s+CLIP"):
        fuse_grids(_target(), {"eyes": (torch.zeros(1, 257, D + 1), [_box(1, 1, 2, 2)])}, {"eyes": [_box(1, 1, 2, 2)]})


def test_make_condition_expands_uncond_and_records_fused_parts():
    target = _target(2)
    uncond = torch.arange(257 * D, dtype=torch.float32).reshape(1, 257, D)
    cond = make_condition(target, {"eyes": (_source(1), [_box(2, 2, 6, 6)]), "mouth": None},
                          {"eyes": [_box(1, 1, 5, 5)], "mouth": [_box(10, 4, 14, 12)]}, uncond)
    assert isinstance(cond, FapCondition) and len(cond) == 2
    assert cond.parts == ("eyes",)
    assert cond.uncond.shape == (2, 257, D) and torch.equal(cond.uncond[1], uncond[0])
    assert torch.equal(cond.fused, fuse_grids(target, {"eyes": (_source(1), [_box(2, 2, 6, 6)])},
                                              {"eyes": [_box(1, 1, 5, 5)]}))
    assert cond.target_boxes["mouth"].shape == (2, 4)
    assert torch.allclose(cond.target_boxes["mouth"][1], torch.tensor(_box(10, 4, 14, 12)))
