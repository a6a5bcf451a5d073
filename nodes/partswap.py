"""Part swap family: FuseAnyPart part boxes/masks and the classic cut-and-paste part swap."""
from __future__ import annotations

import numpy as np

from ..models.face import detect, video
from ..models.face.pose import yaw_degrees
from ..models.face.records import FaceSet, has_landmarks68, no_landmarks68_message
from ..models.partswap import blend, classic, part_detect, part_edit, parts
from . import preview, services
from .common import FACE_MODEL, FACES, PARTS_TYPE, check_finite, images_np, progress, to_image, to_mask

CATEGORY = "SwapForge/Part swap"
GDINO = "SWAPFORGE_GROUNDING_DINO"
SAM = "SWAPFORGE_SAM"

GDINO_EXPECTED = ("Expected an official Grounding DINO checkpoint (groundingdino_swint_ogc.pth, 694 MB, or "
                  "groundingdino_swinb_cogcoor.pth, 938 MB; Apache-2.0) from the IDEA-Research/GroundingDINO "
                  "GitHub releases or the hub repo ShilongLiu/GroundingDINO, in models/grounding-dino.")
BERT_EXPECTED = ("Grounding DINO's text side needs a local bert-base-uncased folder (config.json and vocab.txt "
                 "or tokenizer.json; Apache-2.0; hub repo google-bert/bert-base-uncased) in "
                 "models/bert-base-uncased.")
SAM_EXPECTED = ("Expected an official Segment Anything checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
                "sam_vit_h_4b8939.pth; Apache-2.0) from the facebookresearch/segment-anything README, in "
                "models/sams.")


class _Loaded:
    """A loaded detector/refiner and its torch module under ComfyUI's memory manager."""

    def __init__(self, runner):
        # the runner applies ComfyUI's dtype where it is safe (SAM keeps its prompt side in float32)
        runner.to("cpu", services.compute_dtype(services.torch_device()))
        self.runner = runner
        self.managed = services.ManagedModel(runner.model.eval())

    def ready(self):
        """The runner, with its module placed on ComfyUI's device (load right before use)."""
        self.managed.load()
        return self.runner


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
        check_finite("SwapForge Face Parts", dilate=dilate, feather=feather)
        frames = images_np(image)
        faces.check_batch(len(frames))
        partset = parts.compute_parts(faces)
        masks = parts.render_part_masks(faces, parts.PARTS, None if face_index < 0 else face_index,
                                        dilate_frac=dilate, feather_frac=feather)
        result = (partset, to_mask(masks["eyes"]), to_mask(masks["nose"]), to_mask(masks["mouth"]),
                  to_image(parts.draw_parts(frames, partset)))
        return preview.NodeOutput(result, preview.face_picker_ui(faces, frames, "face_index"))


class SwapForgeClassicPartSwap:
    DESCRIPTION = ("Swaps eyes, nose and/or mouth from source photos into every frame of the target: each part "
                   "is aligned by its landmarks, colour-matched and blended seamlessly (the cut-and-paste "
                   "baseline of FuseAnyPart). Frames without a face, and faces turned more than max_yaw, pass "
                   "through unchanged and are reported in status.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("image", "mask", "status")
    OUTPUT_TOOLTIPS = ("The edited frames (frames without a face unchanged).", "Where each frame was changed: the union of the part masks.", "One line per frame: swapped, or why not (no face, face index out of range, skipped: pose).")
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
            "max_yaw": ("FLOAT", {"default": classic.DEFAULT_MAX_YAW, "min": 0.0, "max": 90.0, "step": 1.0,
                                  "tooltip": "Faces (and sources) turned left or right more than this many degrees "
                                             "are left unchanged (status 'skipped: pose'): frontal parts do not "
                                             "fit a turned face. 90 swaps every face."}),
            "masks": (list(classic.MASK_MODES), {"default": classic.MASK_MODES[0], "tooltip":
                      "seam-aware: each part's region covers the target's and the donor's part, hugs the part "
                      "and is colour-matched on the skin around it. landmark hulls: the earlier regions (the "
                      "target's part only, grown by the part's overall size)."}),
            "eyes_source": ("IMAGE", {"tooltip": src_tip.format("eyes and brows")}),
            "nose_source": ("IMAGE", {"tooltip": src_tip.format("nose")}),
            "mouth_source": ("IMAGE", {"tooltip": src_tip.format("mouth")}),
            "target_faces": (FACES, {"tooltip": "Faces already detected (or tracked) on the target."}),
        }}

    def swap(self, face_model, target, blend_mode, color_match, face_index, dilate, feather,
             eyes_source=None, nose_source=None, mouth_source=None, target_faces=None,
             max_yaw=classic.DEFAULT_MAX_YAW, masks=classic.MASK_MODES[0]):
        check_finite("SwapForge Classic Part Swap", dilate=dilate, feather=feather, max_yaw=max_yaw)
        frames = images_np(target)
        given = {"eyes": eyes_source, "nose": nose_source, "mouth": mouth_source}
        sources = {}
        for part, img in given.items():
            if img is not None:
                sources[part] = _source_part(face_model, img, part, max_yaw)
        if not sources:
            raise ValueError("SwapForge Classic Part Swap: no source connected. Connect at least one of "
                             "eyes_source, nose_source, mouth_source.")
        if target_faces is None:
            target_faces = video.detect_or_track(face_model, frames, progress=progress(len(frames)))
        target_faces.check_batch(len(frames), "target")
        out, mask, status = classic.swap_parts_batch(
            frames, target_faces, sources, None if face_index < 0 else face_index, blend_mode, color_match,
            dilate, feather, progress=progress(len(frames)), max_yaw=max_yaw, masks=masks)
        report = "\n".join(f"frame {i}: {s}" for i, s in enumerate(status))
        return preview.NodeOutput((to_image(out), to_mask(mask), report),
                                  preview.face_picker_ui(target_faces, frames, "face_index"))


class SwapForgeGroundingDinoLoader:
    DESCRIPTION = ("Loads an official Grounding DINO checkpoint (SwinT-OGC or SwinB) from models/grounding-dino "
                   "with a local bert-base-uncased folder, for the Part Detector. Runs on transformers' own "
                   "Grounding DINO; nothing is downloaded.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (GDINO,)
    RETURN_NAMES = ("grounding_dino",)
    OUTPUT_TOOLTIPS = ("A text-prompted box detector for the Part Detector.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (services.list_files("grounding-dino", (".pth", ".safetensors")),
                           {"tooltip": "The checkpoint in models/grounding-dino (groundingdino_swint_ogc.pth "
                                       "or groundingdino_swinb_cogcoor.pth)."}),
            "bert": (services.list_dirs("bert-base-uncased"),
                     {"tooltip": "The bert-base-uncased folder (config.json + vocab.txt) in models/."}),
        }}

    def load(self, model_name, bert):
        path = services.require_file("grounding-dino", model_name, GDINO_EXPECTED)
        bert_dir = services.dir_path("bert-base-uncased", bert)
        if bert_dir is None:
            raise FileNotFoundError(f"SwapForge: no BERT folder {bert!r} in "
                                    f"{services.folder_paths_for('bert-base-uncased')}. {BERT_EXPECTED}")
        from ..models.partswap import grounding_dino
        gd = grounding_dino.load_grounding_dino(path, bert_dir)
        return (_Loaded(gd),)


class SwapForgeSAMLoader:
    DESCRIPTION = ("Loads an official Segment Anything checkpoint (vit_b, vit_l or vit_h) from models/sams, for "
                   "the Part Detector's 'sam' mask mode.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (SAM,)
    RETURN_NAMES = ("sam",)
    OUTPUT_TOOLTIPS = ("A box-prompted segmenter that refines part boxes into masks.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (services.list_files("sams", (".pth", ".safetensors")),
                           {"tooltip": "The checkpoint in models/sams (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth "
                                       "or sam_vit_h_4b8939.pth)."}),
        }}

    def load(self, model_name):
        path = services.require_file("sams", model_name, SAM_EXPECTED)
        from ..models.partswap import sam
        refiner = sam.load_sam(path)
        return (_Loaded(refiner),)


class SwapForgePartDetector:
    DESCRIPTION = ("FuseAnyPart part boxes (eyes with brows, nose, mouth; [y0, x0, y1, x1] normalised, tiled "
                   "vertically) and part masks for every face of every frame. Backends: the 68 landmarks "
                   "(default, needs nothing) or Grounding DINO with a text prompt per part, searched inside "
                   "each detected face; a face where a part is not found falls back to its landmark boxes and "
                   "the report says so. Masks: hard boxes, soft landmark hulls, or SAM inside each box.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (PARTS_TYPE, "MASK", "MASK", "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("parts", "eyes_mask", "nose_mask", "mouth_mask", "preview", "report")
    OUTPUT_TOOLTIPS = ("FuseAnyPart part boxes per frame and face: [y0, x0, y1, x1], normalised.",
                       "Mask of the eyes and brows.", "Mask of the nose.", "Mask of the mouth.",
                       "The frames with the part boxes drawn (eyes red, nose green, mouth blue).",
                       "One line per frame: where each face's boxes came from (with the detector's scores), "
                       "frames without a face.")
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        thr = {"min": 0.0, "max": 0.99, "step": 0.01}
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The frames the faces were detected on."}),
            "faces": (FACES, {"tooltip": "Faces from Detect, Select or Track Faces: the detector searches inside "
                                         "each face, and the landmarks are the default and the fallback."}),
            "backend": (["landmarks", "grounding_dino"],
                        {"default": "landmarks", "tooltip": "landmarks: boxes from the 68 landmarks (embedded). "
                         "grounding_dino: the paper's text-prompted detector (connect Load Grounding DINO)."}),
            "mask_mode": (list(part_detect.MASK_MODES),
                          {"default": "box", "tooltip": "box: the hard part boxes (what FuseAnyPart inpaints). "
                           "landmarks: soft hulls of the part landmarks (the classic swap's regions). sam: "
                           "Segment Anything's mask for each box, cut to the box (connect Load SAM)."}),
            "eyes_prompt": ("STRING", {"default": part_detect.DEFAULT_PROMPTS["eyes"],
                                       "tooltip": "Grounding DINO phrases for the eyes part, separated by '.'; "
                                                  "every match is merged into one box (eyes and brows)."}),
            "nose_prompt": ("STRING", {"default": part_detect.DEFAULT_PROMPTS["nose"],
                                       "tooltip": "Grounding DINO phrases for the nose (best match kept)."}),
            "mouth_prompt": ("STRING", {"default": part_detect.DEFAULT_PROMPTS["mouth"],
                                        "tooltip": "Grounding DINO phrases for the mouth (best match kept)."}),
            "box_threshold": ("FLOAT", {"default": 0.35, **thr,
                                        "tooltip": "Grounding DINO: keep boxes scoring above this."}),
            "text_threshold": ("FLOAT", {"default": 0.25, **thr,
                                         "tooltip": "Grounding DINO: a phrase counts for a box when its tokens "
                                                    "score above this."}),
            "face_margin": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 2.0, "step": 0.05,
                                      "tooltip": "The detector sees each face's box widened by this fraction of "
                                                 "its size on every side."}),
            "face_index": ("INT", {"default": -1, "min": -1, "max": 63,
                                   "tooltip": "Masks of this face only (-1: all faces). Boxes cover every face."}),
        }, "optional": {
            "grounding_dino": (GDINO, {"tooltip": "From Load Grounding DINO; needed by the grounding_dino backend."}),
            "sam": (SAM, {"tooltip": "From Load SAM; needed by the sam mask mode."}),
            "boxes": ("STRING", {"default": "", "tooltip": part_edit.WIDGET_TOOLTIP}),
        }}

    def detect(self, image, faces, backend, mask_mode, eyes_prompt, nose_prompt, mouth_prompt, box_threshold,
               text_threshold, face_margin, face_index, grounding_dino=None, sam=None, boxes=""):
        check_finite("SwapForge Part Detector", box_threshold=box_threshold, text_threshold=text_threshold,
                     face_margin=face_margin)
        frames = images_np(image)
        faces.check_batch(len(frames))
        edits = part_edit.parse_box_edits(boxes)
        detector = None
        if backend == "grounding_dino":
            if grounding_dino is None:
                raise ValueError("SwapForge Part Detector: the grounding_dino backend needs a model. Connect Load "
                                 "Grounding DINO, or choose the landmarks backend.")
            detector = grounding_dino.ready()
        part_detect.check_mask_mode(mask_mode, sam)
        prompts = {"eyes": eyes_prompt, "nose": nose_prompt, "mouth": mouth_prompt}
        pbar = progress(len(frames) * (2 if mask_mode == "sam" else 1))
        detected, report = part_detect.detect_parts(frames, faces, detector, prompts, box_threshold,
                                                    text_threshold, face_margin, on_frame=pbar)
        partset, notes = part_edit.apply_box_edits(detected, edits)
        masks = part_detect.part_masks(frames, faces, partset, mask_mode,
                                       refiner=sam.ready() if mask_mode == "sam" else None,
                                       face_index=None if face_index < 0 else face_index,
                                       on_frame=pbar if mask_mode == "sam" else None)
        text = part_detect.format_report(report, len(frames), faces.counts(), backend)
        if edits:
            text += f"\nedited boxes ({', '.join(edits.boxes)}) on face {edits.face}" + "".join("\n" + n for n in notes)
        result = (partset, to_mask(masks["eyes"]), to_mask(masks["nose"]), to_mask(masks["mouth"]),
                  to_image(parts.draw_parts(frames, partset)), text)
        ui = preview.part_boxes_ui(faces, frames, detected, partset)
        ui.update(preview.face_picker_ui(faces, frames, "face_index", ui["swapforge_parts"][0]["image"]))
        return preview.NodeOutput(result, ui)


def _source_part(face_model, image, part, max_yaw=90.0):
    """(image, 68 landmarks) of the largest face in the first image of a source batch."""
    first = images_np(image)[:1]
    faces: FaceSet = detect.detect_faces(face_model, first, threshold=0.5, min_size=0, max_faces=1,
                                         order="largest_first")
    if len(faces.frames[0]) == 0:
        raise ValueError(f"SwapForge Classic Part Swap: no face found in the {part} source image "
                         f"({first.shape[2]}x{first.shape[1]}, backend {face_model.name}). Expected a photo with a "
                         f"clearly visible face. Connect another {part}_source photo, or load the 'yunet (embedded)' "
                         f"backend in the Face Model Loader (it finds smaller and turned faces than dlib_mmod).")
    if not has_landmarks68(faces.frames[0].landmarks68[0]):
        raise ValueError(no_landmarks68_message(f"The classic part swap ({part} source)"))
    lm = np.asarray(faces.frames[0].landmarks68[0])
    yaw = yaw_degrees(lm)
    if abs(yaw) > max_yaw:
        raise ValueError(f"SwapForge Classic Part Swap: the face in the {part} source image is turned {yaw:+.0f} "
                         f"degrees, more than max_yaw ({max_yaw:g}); its {part} would not fit a frontal target. "
                         f"Connect a more frontal {part}_source photo, or raise max_yaw.")
    return first[0], lm


NODE_CLASS_MAPPINGS = {
    "SwapForge_FaceParts": SwapForgeFaceParts,
    "SwapForge_ClassicPartSwap": SwapForgeClassicPartSwap,
    "SwapForge_PartDetector": SwapForgePartDetector,
    "SwapForge_GroundingDinoLoader": SwapForgeGroundingDinoLoader,
    "SwapForge_SAMLoader": SwapForgeSAMLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SwapForge_FaceParts": "Face Parts (SwapForge)",
    "SwapForge_ClassicPartSwap": "Classic Part Swap (SwapForge)",
    "SwapForge_PartDetector": "Part Detector (SwapForge)",
    "SwapForge_GroundingDinoLoader": "Load Grounding DINO (SwapForge)",
    "SwapForge_SAMLoader": "Load SAM (SwapForge)",
}
