"""The images FuseAnyPart hands to its CLIP image encoder, and its inpainting mask.

FuseAnyPart encodes four images separately with CLIP (their penultimate hidden states, 257 tokens = CLS +
a 16 x 16 patch grid, feed the Mask-based Fusion Module, paper eq. 3, see fusion.py):

- the target face with the boxes of the parts being swapped painted a flat skin colour (`skin_fill_target`);
  a part that is kept stays as it is (paper eq. 3 keeps the target's features there); the same image is
  VAE-encoded as the masked reference latent of the 9-channel UNet;
- one reference image per swapped part: the source image black everywhere except that part's box, which
  stays where it is in the frame, not cropped (`reference_input`);
- for the unconditional branch of classifier-free guidance, an input that is all zero after CLIP
  normalisation (`zero_pixel_values`, fed to the encoder without preprocessing; `zero_image` is the 0..1
  image closest to it, for an encoder that only takes images).

Before CLIP's own 224 px preprocessing the authors resize every input to 256 px with PIL's bicubic filter
(`authors_resize`); the pack does the same by default.

The inpainting mask is the union of the swapped parts' boxes at full resolution, nearest-resized to the
latent size (`boxes_mask`, `latent_mask`).

Conventions: images are torch float tensors [B, H, W, 3] in 0..1 (ComfyUI IMAGE layout). Part boxes are
[y0, x0, y1, x1] normalised to the frame (models/partswap/parts.py); pixel (i, j) lies inside a box when
its centre satisfies y0 <= (i + 0.5) / H < y1 and x0 <= (j + 0.5) / W < x1, exactly as
`models.partswap.parts.box_mask` draws it. (The authors' own mask code truncates box * size to int
instead, which can move an edge by one pixel; SwapForge uses one convention everywhere.)
"""
from __future__ import annotations

from typing import Mapping, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

PARTS = ("eyes", "nose", "mouth")

# Flat skin colour (RGB 0..255) the authors' samples paint over the target's part boxes.
SKIN_RGB = (245, 223, 209)

# OpenAI CLIP image normalisation (also used by the OpenCLIP ViT-H/14 IP-Adapter encoder).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224

BoxLike = Union[Sequence[float], torch.Tensor]


# ---------------------------------------------------------------- validation helpers

def _check_image(image: torch.Tensor, what: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"SwapForge FuseAnyPart: {what} must be a torch tensor [B, H, W, 3] in 0..1, got "
                         f"{shape}. Pass a ComfyUI IMAGE.")
    if not image.is_floating_point():
        raise ValueError(f"SwapForge FuseAnyPart: {what} must be floating point in 0..1, got {image.dtype}. "
                         f"Convert it with image.float() / 255.")
    return image


def _box64(box: BoxLike, what: str = "part box") -> torch.Tensor:
    """One box as a float64 CPU tensor [4] (float64, like parts.box_mask, so both agree bit for bit)."""
    if isinstance(box, torch.Tensor):
        b = box.detach().to("cpu", torch.float64).reshape(-1)
    else:
        b = torch.as_tensor([float(v) for v in box], dtype=torch.float64).reshape(-1)
    if b.shape != (4,) or not bool(torch.isfinite(b).all()):
        raise ValueError(f"SwapForge FuseAnyPart: a {what} must be 4 finite numbers [y0, x0, y1, x1] in 0..1, "
                         f"got {b.tolist()}.")
    return b


def _part_dict(boxes) -> Mapping[str, BoxLike]:
    """A PartBoxes record or a mapping part -> box."""
    if hasattr(boxes, "as_dict"):
        return boxes.as_dict()
    if isinstance(boxes, Mapping):
        return boxes
    raise ValueError(f"SwapForge FuseAnyPart: the boxes of one image must be a PartBoxes or a dict "
                     f"part -> [y0, x0, y1, x1], got {type(boxes).__name__}.")


def _check_parts(parts) -> Tuple[str, ...]:
    parts = tuple(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"SwapForge FuseAnyPart: unknown part(s) {bad}. Expected any of {PARTS}.")
    return parts


def pixel_box_mask(box: BoxLike, size: Tuple[int, int], device=None) -> torch.Tensor:
    """Bool mask [H, W] of the pixels whose centre lies inside one normalised box [y0, x0, y1, x1].

    Pixel (i, j) is inside when y0 <= (i + 0.5) / H < y1 and x0 <= (j + 0.5) / W < x1, computed in
    float64 exactly as `models.partswap.parts.box_mask`, so the two agree pixel for pixel.
    """
    h, w = (int(v) for v in size)
    b = _box64(box)
    yc = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xc = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    iy = (yc >= b[0]) & (yc < b[2])
    ix = (xc >= b[1]) & (xc < b[3])
    return (iy[:, None] & ix[None, :]).to(device)


# ---------------------------------------------------------------- CLIP / VAE inputs

def skin_fill_target(image: torch.Tensor, boxes: Sequence, parts: Sequence[str] = PARTS,
                     color: Tuple[int, int, int] = SKIN_RGB) -> torch.Tensor:
    """The target face as FuseAnyPart encodes it: its part boxes painted a flat skin colour.

    image [B, H, W, 3] in 0..1; boxes: one entry per image, a PartBoxes or a dict part -> [y0, x0, y1, x1]
    normalised; parts: which boxes to paint; color: RGB 0..255 (default SKIN_RGB = 245, 223, 209, the
    authors' samples). Returns a new [B, H, W, 3] tensor (same dtype and device); the input is not changed.
    This image is the target input of the fusion (paper eq. 3) and, VAE-encoded, the masked reference
    latent of the inpainting UNet. Pixels painted: exactly those of `pixel_box_mask` (= parts.box_mask).
    """
    image = _check_image(image, "target image")
    parts = _check_parts(parts)
    b, h, w, _ = image.shape
    if len(boxes) != b:
        raise ValueError(f"SwapForge FuseAnyPart: {len(boxes)} set(s) of part boxes given for a target batch of "
                         f"{b}. Give one set of boxes per target image.")
    if len(color) != 3:
        raise ValueError(f"SwapForge FuseAnyPart: color must be RGB (3 values 0..255), got {color!r}.")
    fill = torch.tensor([float(c) / 255.0 for c in color], dtype=image.dtype, device=image.device)
    mask = boxes_mask(boxes, (h, w), parts=parts, device=image.device) > 0.5
    out = image.clone()
    out[mask] = fill
    return out


def reference_input(image: torch.Tensor, box) -> torch.Tensor:
    """A part reference image as FuseAnyPart encodes it: black except the part box, kept in place.

    image [B, H, W, 3] in 0..1; box: one normalised [y0, x0, y1, x1] per image (a [B, 4] tensor or a
    sequence of B boxes; a single box [4] is used for every image). Returns [B, H, W, 3]: the image's
    pixels inside the box (pixel-centre rule of `pixel_box_mask`), zero elsewhere. The box is not cropped
    or resized: the part stays where it is in the frame, so its patch tokens stay at the grid cells that
    the fusion (paper eq. 3) cuts out.
    """
    image = _check_image(image, "reference image")
    b, h, w, _ = image.shape
    if isinstance(box, torch.Tensor) and box.ndim == 1:
        box = [box] * b
    elif not isinstance(box, torch.Tensor) and len(box) == 4 and not hasattr(box[0], "__len__"):
        box = [box] * b
    if len(box) != b:
        raise ValueError(f"SwapForge FuseAnyPart: {len(box)} reference box(es) given for a batch of {b} "
                         f"image(s). Give one [y0, x0, y1, x1] box per image.")
    out = torch.zeros_like(image)
    for i in range(b):
        m = pixel_box_mask(box[i], (h, w), device=image.device)
        out[i][m] = image[i][m]
    return out


def pad_to_square(image: torch.Tensor, box) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pad a non-square reference with black to a square (centred) and move its box to match.

    CLIP encoders centre-crop to a square, and the fusion (eq. 3) maps a box normalised to the whole image
    onto the 16 x 16 grid; both agree only for square images. A reference is black outside its box anyway,
    so black padding changes nothing but the geometry. image [B, H, W, 3]; box [4] or [B, 4] normalised
    [y0, x0, y1, x1]. Returns (image [B, S, S, 3] with S = max(H, W), box [B, 4] in the padded frame).
    """
    image = _check_image(image, "reference image")
    b, h, w, _ = image.shape
    box = torch.as_tensor(box, dtype=torch.float64).reshape(-1, 4).expand(b, 4)
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = image.new_zeros((b, side, side, 3))
    out[:, top:top + h, left:left + w] = image
    scale = torch.tensor([h, w, h, w], dtype=torch.float64) / side
    shift = torch.tensor([top, left, top, left], dtype=torch.float64) / side
    return out, (box * scale + shift).to(torch.float32)


def zero_image(size: int = CLIP_SIZE) -> torch.Tensor:
    """The unconditional CLIP input for an encoder that normalises internally: [1, size, size, 3] in 0..1.

    The authors' unconditional branch (classifier-free guidance) is the CLIP features of
    `torch.zeros(B, 3, 224, 224)` fed straight to the encoder as pixel values, i.e. an input that is all
    zero *after* normalisation, not a black image. Two conventions follow:

    - ComfyUI: CLIP_VISION.encode_image normalises internally ((x - CLIP_MEAN) / CLIP_STD, after
      quantising x to 8 bits), so the closest it can be given is the 0..1 image whose normalisation is zero:
      every pixel equal to CLIP_MEAN. That is what this function returns; after ComfyUI's 8-bit rounding the
      normalised value is only within 0.5/255/std (under 0.0075) of zero. The pack therefore feeds
      `zero_pixel_values` to the CLIP model itself (nodes/services.clip_vision_pixels), which is exact; this
      image is the fallback for an encoder that only takes images. (A black 0..1 image would normalise to
      -mean/std, about -1.8, and give other features.)
    - transformers / diffusers CLIPVisionModel called on pixel values directly (no internal
      normalisation): pass `zero_pixel_values(size)`, literal zeros [1, 3, size, size], exactly as the
      authors do.

    Expand to the batch with .expand(B, -1, -1, -1) (or expand the features).
    """
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)
    return mean.view(1, 1, 1, 3).expand(1, int(size), int(size), 3).clone()


def zero_pixel_values(size: int = CLIP_SIZE) -> torch.Tensor:
    """Already-normalised unconditional CLIP input [1, 3, size, size] of zeros (see zero_image)."""
    return torch.zeros(1, 3, int(size), int(size))


# ---------------------------------------------------------------- inpainting mask

def boxes_mask(boxes: Sequence, size: Tuple[int, int], parts: Sequence[str] = PARTS, device=None) -> torch.Tensor:
    """Union of each image's part boxes at full resolution: float32 [B, H, W], 1 inside, 0 outside.

    boxes: one entry per image (PartBoxes or dict part -> [y0, x0, y1, x1] normalised); size (H, W) of the
    images. Each box is drawn with the pixel-centre rule of `pixel_box_mask` (= parts.box_mask). This is
    the FuseAnyPart inpainting mask before it is resized to the latent (`latent_mask`).
    """
    parts = _check_parts(parts)
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"SwapForge FuseAnyPart: size must be positive (H, W), got {(h, w)}.")
    out = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, pb in enumerate(boxes):
        d = _part_dict(pb)
        for p in parts:
            if p not in d or d[p] is None:
                raise ValueError(f"SwapForge FuseAnyPart: image {i} has no {p} box. Compute the part boxes of "
                                 f"every image (SwapForge part boxes node) or leave {p} out of parts.")
            out[i] |= pixel_box_mask(d[p], (h, w))
    return out.to(device=device, dtype=torch.float32)


def latent_mask(mask: torch.Tensor, latent_hw: Tuple[int, int]) -> torch.Tensor:
    """Nearest resize of a full-resolution mask [B, H, W] to the latent size: [B, 1, h, w].

    Uses torch.nn.functional.interpolate(mode="nearest"), as the authors do: latent pixel (r, c) takes the
    mask value at (floor(r * H / h), floor(c * W / w)). The dtype is kept for floating masks; a bool or
    integer mask comes back as float32.
    """
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3:
        raise ValueError(f"SwapForge FuseAnyPart: mask must be a tensor [B, H, W], got "
                         f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}.")
    h, w = (int(v) for v in latent_hw)
    m = mask if mask.is_floating_point() else mask.float()
    return F.interpolate(m[:, None], size=(h, w), mode="nearest")


# ---------------------------------------------------------------- CLIP preprocessing

#: The authors' inference resizes every CLIP input to 256 x 256 with PIL (bicubic, Pillow's default) before
#: CLIPImageProcessor's own 224 px resize and centre crop (FuseAnyPart inference.py, get_clip_image_embeds).
AUTHORS_CLIP_RESIZE = 256


def authors_resize(image: torch.Tensor, size: int = AUTHORS_CLIP_RESIZE) -> torch.Tensor:
    """The authors' first CLIP step: each image to size x size with PIL's bicubic filter, on 8-bit pixels (their
    inputs are JPEG files opened with PIL). image [B, H, W, 3] in 0..1 -> [B, size, size, 3] in 0..1 (float32,
    multiples of 1/255). The standard 224 px preprocessing follows (ComfyUI's CLIP_VISION.encode_image, or
    preprocess_for_clip)."""
    from PIL import Image

    image = _check_image(image)
    size = int(size)
    u8 = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = [torch.from_numpy(np.array(Image.fromarray(u8[i]).resize((size, size), Image.BICUBIC)))
           for i in range(len(u8))]
    return (torch.stack(out).float() / 255.0).to(image.device)


def preprocess_for_clip(image: torch.Tensor, size: int = CLIP_SIZE) -> torch.Tensor:
    """Standard CLIP preprocessing for a transformers/diffusers CLIPVisionModel: [B, H, W, 3] -> [B, 3, size, size].

    Like transformers' CLIPImageProcessor (the authors' path): resize the shortest side to `size` with
    bicubic filtering (the long side to int(size * long / short)), centre crop size x size (offset
    (extra) // 2), then normalise with CLIP_MEAN / CLIP_STD. The resize is torch bicubic with antialias,
    which approximates PIL's bicubic; values are clamped to 0..1 (as a uint8 PIL image would be) but not
    quantised to 8 bits. ComfyUI's CLIP_VISION.encode_image does its own preprocessing: give it the
    0..1 image, not this.
    """
    image = _check_image(image)
    b, h, w, _ = image.shape
    x = image.permute(0, 3, 1, 2)
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    if (nh, nw) != (h, w):
        x = F.interpolate(x.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 1.0).to(image.dtype)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
