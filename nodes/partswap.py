"""Part swap family: FuseAnyPart part boxes/masks and the classic cut-and-paste part swap."""
from __future__ import annotations

import numpy as np

from ..models.face import detect
from ..models.face.records import FaceSet
from ..models.partswap import blend, classic, parts
from .common import FACE_MODEL, FACES, PARTS_TYPE, images_np, progress, to_image, to_mask

CATEGORY = "SwapForge/Part swap"


class SwapForgeFaceParts:
    DESCRIPTION = ("Eyes (with brows), nose and mouth of each face from its 68 landmarks: FuseAnyPart part boxes "
                   "([y0, x0, y1, x1], normalised, tiled vertically) and soft masks.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (PARTS_TYPE, "MASK", "MASK", "MASK", "IMAGE")
    RETURN_NAMES = ("parts", "eyes_mask", "nose_mask", "mouth_mask", "preview")
    OUTPUT_TOOLTIPS = ("FuseAnyPart part boxes per frame and face: [y0, x0, y1, x1], normalised.", "Soft mask of the eyes and brows.", "Soft mask of the nose.", "Soft mask of the mouth.", "The frames with the part boxes drawn.")
    FUNCTION = "parts"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The frames the faces were detected on."}),
            "faces": (FACES, {"tooltip": "Faces from Detect, Select or Track Faces."}),
            "face_index": ("INT", {"default": -1, "min": -1, "max": 63,
                                   "tooltip": "Masks of this face only (-1: all faces)."}),
            "dilate": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01,
                                 "tooltip": "Grow each part mask by this fraction of the part's size."}),
            "feather": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Soften each part mask over this fraction of the part's size."}),
        }}

    def parts(self, image, faces, face_index, dilate, feather):
        frames = images_np(image)
        faces.check_batch(len(frames))
        partset = parts.compute_parts(faces)
        masks = parts.render_part_masks(faces, parts.PARTS, None if face_index < 0 else face_index,
                                        dilate_frac=dilate, feather_frac=feather)
        return (partset, to_mask(masks["eyes"]), to_mask(masks["nose"]), to_mask(masks["mouth"]),
                to_image(parts.draw_parts(frames, partset)))


class SwapForgeClassicPartSwap:
    DESCRIPTION = ("Swaps eyes, nose and/or mouth from source photos into every frame of the target: each part "
                   "is aligned by its landmarks, colour-matched and blended seamlessly (the cut-and-paste "
                   "baseline of FuseAnyPart). Frames without a face pass through unchanged and are reported.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("image", "mask", "status")
    OUTPUT_TOOLTIPS = ("The edited frames (frames without a face unchanged).", "Where each frame was changed: the union of the part masks.", "One line per frame: swapped, or why not.")
    FUNCTION = "swap"

    @classmethod
    def INPUT_TYPES(cls):
        src_tip = "Photo to take the {} from (its largest face; first image of the batch). Leave empty to keep " \
                  "the target's."
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "Detects the faces in the sources (and the target when "
                                                   "target_faces is not connected)."}),
            "target": ("IMAGE", {"tooltip": "The image or video batch to edit."}),
            "blend_mode": (list(blend.BLEND_MODES), {"default": "poisson",
                                                     "tooltip": "poisson: gradient-domain cloning; multiband: "
                                                                "Laplacian pyramid blending; alpha: feathered mask."}),
            "color_match": (["none", "rgb", "lab"], {"default": "rgb",
                                                    "tooltip": "Match each part's colours to the target's skin "
                                                               "before blending."}),
            "face_index": ("INT", {"default": 0, "min": -1, "max": 63,
                                   "tooltip": "Which target face to edit in each frame (-1: every face)."}),
            "dilate": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01,
                                 "tooltip": "Grow each part region by this fraction of the part's size."}),
            "feather": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Soften each part region over this fraction of the part's size."}),
        }, "optional": {
            "eyes_source": ("IMAGE", {"tooltip": src_tip.format("eyes and brows")}),
            "nose_source": ("IMAGE", {"tooltip": src_tip.format("nose")}),
            "mouth_source": ("IMAGE", {"tooltip": src_tip.format("mouth")}),
            "target_faces": (FACES, {"tooltip": "Faces already detected (or tracked) on the target."}),
        }}

    def swap(self, face_model, target, blend_mode, color_match, face_index, dilate, feather,
             eyes_source=None, nose_source=None, mouth_source=None, target_faces=None):
        frames = images_np(target)
        given = {"eyes": eyes_source, "nose": nose_source, "mouth": mouth_source}
        sources = {}
        for part, img in given.items():
            if img is not None:
                sources[part] = _source_part(face_model, img, part)
        if not sources:
            raise ValueError("SwapForge Classic Part Swap: no source connected. Connect at least one of "
                             "eyes_source, nose_source, mouth_source.")
        if target_faces is None:
            target_faces = detect.detect_faces(face_model, frames, progress=progress(len(frames)))
        target_faces.check_batch(len(frames), "target")
        out, mask, status = classic.swap_parts_batch(
            frames, target_faces, sources, None if face_index < 0 else face_index, blend_mode, color_match,
            dilate, feather, progress=progress(len(frames)))
        report = "\n".join(f"frame {i}: {s}" for i, s in enumerate(status))
        return (to_image(out), to_mask(mask), report)


def _source_part(face_model, image, part):
    """(image, 68 landmarks) of the largest face in the first image of a source batch."""
    first = images_np(image)[:1]
    faces: FaceSet = detect.detect_faces(face_model, first, max_faces=1, order="largest_first")
    if len(faces.frames[0]) == 0:
        raise ValueError(f"SwapForge Classic Part Swap: no face found in the {part} source image. Use a photo "
                         "with a clearly visible face, or lower the detector threshold.")
    return first[0], np.asarray(faces.frames[0].landmarks68[0])


NODE_CLASS_MAPPINGS = {
    "SwapForge_FaceParts": SwapForgeFaceParts,
    "SwapForge_ClassicPartSwap": SwapForgeClassicPartSwap,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SwapForge_FaceParts": "Face Parts (SwapForge)",
    "SwapForge_ClassicPartSwap": "Classic Part Swap (SwapForge)",
}
