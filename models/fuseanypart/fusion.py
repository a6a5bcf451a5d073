"""FuseAnyPart Mask-based Fusion Module (paper eq. 3) and the record it produces.

CLIP (penultimate hidden states) turns each 224 x 224 input into 257 tokens: token 0 is CLS, tokens
1..256 are a 16 x 16 patch grid in row-major order (token 1 + r * 16 + c is grid cell (r, c)). Paper eq. 3
builds the condition on these grids: for each swapped part, the source part's box is cut out of the
source's grid, resized with nearest interpolation to the size of the target's box for that part, and
pasted into the target's grid; the CLS token and every cell outside the pasted boxes stay the target's.
The fused 256 patch tokens then go through the MLP (`image_proj2`) to form the condition C that the
addition-based injection (paper eq. 4) adds at every cross-attention layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

PARTS = ("eyes", "nose", "mouth")  # also the paste order of fuse_grids
GRID = 16


def box_to_cells(box, grid: int = GRID) -> Tuple[int, int, int, int]:
    """Grid cells (r0, c0, r1, c1) of a normalised box [y0, x0, y1, x1]: rows r0..r1-1, columns c0..c1-1.

    The authors' rule (paper eq. 3, reference code): box x grid, truncated to int, at least one cell:
        r0 = int(y0 * grid), r1 = max(int(y1 * grid), r0 + 1)   (columns alike with x0, x1).
    SwapForge also keeps the cells on the grid (the authors' code does not): coordinates are first
    clipped to [0, 1], then r0 <= grid - 1 and r1 <= grid. Hence a box touching the bottom edge (y1 = 1.0)
    ends at row grid; a zero-size box (y0 == y1) gets the one cell containing it; a degenerate box on the
    far edge (y0 = y1 = 1.0) gets the last row. An inverted box (y1 < y0) raises ValueError.
    """
    vals = [float(v) for v in (box.reshape(-1).tolist() if isinstance(box, torch.Tensor) else box)]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"SwapForge FuseAnyPart: a part box must be 4 finite numbers [y0, x0, y1, x1] in 0..1, "
                         f"got {vals}.")
    y0, x0, y1, x1 = (min(max(v, 0.0), 1.0) for v in vals)
    if y1 < y0 or x1 < x0:
        raise ValueError(f"SwapForge FuseAnyPart: part box {vals} is inverted (y1 < y0 or x1 < x0). Boxes are "
                         f"[y0, x0, y1, x1], row first; check the order of the coordinates.")

    def span(a: float, b: float) -> Tuple[int, int]:
        i0 = min(int(a * grid), grid - 1)
        i1 = min(max(int(b * grid), i0 + 1), grid)
        return i0, i1

    r0, r1 = span(y0, y1)
    c0, c1 = span(x0, x1)
    return r0, c0, r1, c1


def _batch_boxes(boxes, b: int, what: str) -> torch.Tensor:
    """Boxes as a CPU float64 tensor [b, 4]; a single box ([4] or [1, 4]) is used for every item."""
    t = torch.as_tensor(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=torch.float64)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != 4 or t.shape[0] not in (1, b):
        raise ValueError(f"SwapForge FuseAnyPart: {what} must be [{b}, 4] ([y0, x0, y1, x1] per batch item), got "
                         f"shape {tuple(t.shape)}.")
    return t.expand(b, 4)


def _check_tokens(tokens: torch.Tensor, what: str, grid: int) -> None:
    n = 1 + grid * grid
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[1] != n:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"SwapForge FuseAnyPart: {what} must be CLIP penultimate hidden states [B, {n}, D] "
                         f"(CLS + {grid}x{grid} patches), got {shape}. Use a ViT-/14 encoder at 224 px.")


def fuse_grids(target_tokens: torch.Tensor, sources: Mapping[str, Optional[Tuple[torch.Tensor, object]]],
               target_boxes: Mapping[str, object], enabled: Optional[Mapping[str, bool]] = None,
               grid: int = GRID) -> torch.Tensor:
    """Paper eq. 3: paste each source part's patch features, resized, into the target's 16 x 16 grid.

    target_tokens [B, 257, D]: CLIP penultimate tokens of the skin-filled target (clip_inputs.skin_fill_target).
    sources: part -> (tokens [B or 1, 257, D] of that part's reference image, source box [B or 1, 4] or [4]
        of the part in the source frame); a missing or None entry means the part is not swapped. Each part
        may come from a different source image.
    target_boxes: part -> [B or 1, 4] (or [4]) box of that part in the target frame.
    enabled: part -> bool (default all True); a disabled part keeps the target's features.

    For each batch item and each enabled part with a source, in the order eyes, nose, mouth:
    cells (r0, c0, r1, c1) = box_to_cells(source box), cut = source grid[r0:r1, c0:c1] as [D, h, w],
    resized with torch.nn.functional.interpolate(mode="nearest") to the target box's cell size (th, tw),
    i.e. target cell (i, j) of the box takes source cell (r0 + floor(i * h / th), c0 + floor(j * w / tw)),
    and written into the target grid at the target box cells. Where two target boxes overlap on the grid
    the later part overwrites the earlier (mouth over nose over eyes), as in the authors' code. Token 0 (CLS)
    and all other cells are the target's. Returns a new tensor [B, 257, D] (target dtype and device);
    the inputs are not changed.
    """
    _check_tokens(target_tokens, "target tokens", grid)
    b, n, d = target_tokens.shape
    enabled = {} if enabled is None else dict(enabled)
    bad = [p for p in list(sources) + list(enabled) if p not in PARTS]
    if bad:
        raise ValueError(f"SwapForge FuseAnyPart: unknown part(s) {sorted(set(bad))}. Expected any of {PARTS}.")

    out = target_tokens.clone()
    out_grid = out[:, 1:].view(b, grid, grid, d)  # a view: writes land in `out`
    for part in PARTS:
        entry = sources.get(part)
        if entry is None or not enabled.get(part, True):
            continue
        src_tokens, src_box = entry
        _check_tokens(src_tokens, f"{part} source tokens", grid)
        if src_tokens.shape[0] not in (1, b) or src_tokens.shape[2] != d:
            raise ValueError(f"SwapForge FuseAnyPart: the {part} source tokens are {tuple(src_tokens.shape)} but the "
                             f"target tokens are {tuple(target_tokens.shape)}. Encode every image with the same "
                             f"CLIP vision model, one source per target (or one for all).")
        if part not in target_boxes or target_boxes[part] is None:
            raise ValueError(f"SwapForge FuseAnyPart: the target has no {part} box, so the {part} cannot be "
                             f"pasted. Give the target's part boxes for every swapped part.")
        sboxes = _batch_boxes(src_box, b, f"the {part} source box")
        tboxes = _batch_boxes(target_boxes[part], b, f"the {part} target box")
        src_grid = src_tokens[:, 1:].reshape(src_tokens.shape[0], grid, grid, d)
        for i in range(b):
            sr0, sc0, sr1, sc1 = box_to_cells(sboxes[i], grid)
            tr0, tc0, tr1, tc1 = box_to_cells(tboxes[i], grid)
            cut = src_grid[i if src_grid.shape[0] > 1 else 0, sr0:sr1, sc0:sc1]   # [h, w, D]
            cut = F.interpolate(cut.permute(2, 0, 1)[None], size=(tr1 - tr0, tc1 - tc0), mode="nearest")[0]
            out_grid[i, tr0:tr1, tc0:tc1] = cut.permute(1, 2, 0).to(device=out.device, dtype=out.dtype)
    return out


@dataclass
class FapCondition:
    """SWAPFORGE_FAP_COND: the fused CLIP features that the FuseAnyPart MLP and injection (eq. 4) consume.

    fused [B, 257, D]: CLIP penultimate tokens of the target with the swapped parts pasted in (eq. 3).
    uncond [B, 257, D]: CLIP penultimate tokens of the all-zero (after normalisation) input, expanded to
        B: the unconditional branch of classifier-free guidance (clip_inputs.zero_image).
    target_boxes: part -> [B, 4] float32 boxes [y0, x0, y1, x1] normalised to the target frame.
    parts: the parts that were fused (in paste order); the others are the target's own features.
    Only tokens 1..256 feed the MLP; CLS is kept so the record holds complete encoder outputs.
    """

    fused: torch.Tensor
    uncond: torch.Tensor
    target_boxes: Dict[str, torch.Tensor] = field(default_factory=dict)
    parts: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.fused.shape[0])


def make_condition(target_tokens: torch.Tensor, sources: Mapping[str, Optional[Tuple[torch.Tensor, object]]],
                   target_boxes: Mapping[str, object], uncond_tokens: torch.Tensor,
                   enabled: Optional[Mapping[str, bool]] = None, grid: int = GRID) -> FapCondition:
    """Fuse (fuse_grids, eq. 3) and pack the result with the unconditional tokens into a FapCondition.

    uncond_tokens [1 or B, 257, D]: encoder output for clip_inputs.zero_image; expanded to B.
    """
    fused = fuse_grids(target_tokens, sources, target_boxes, enabled, grid)
    b, n, d = fused.shape
    _check_tokens(uncond_tokens, "unconditional tokens", grid)
    if uncond_tokens.shape[0] not in (1, b) or uncond_tokens.shape[2] != d:
        raise ValueError(f"SwapForge FuseAnyPart: the unconditional tokens are {tuple(uncond_tokens.shape)} but the "
                         f"target tokens are {tuple(fused.shape)}. Encode the zero image with the same CLIP model.")
    uncond = uncond_tokens.to(device=fused.device, dtype=fused.dtype).expand(b, n, d).clone()
    enabled = {} if enabled is None else dict(enabled)
    parts = tuple(p for p in PARTS if sources.get(p) is not None and enabled.get(p, True))
    boxes = {p: _batch_boxes(v, b, f"the {p} target box").to(torch.float32).clone()
             for p, v in target_boxes.items() if v is not None}
    return FapCondition(fused=fused, uncond=uncond, target_boxes=boxes, parts=parts)
