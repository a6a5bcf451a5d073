"""Shared face tools: detector loader, detect, select, track, align & crop, paste back, identities."""
from __future__ import annotations


from ..models.face import align, detect, paste, track, video
from ..models.face import identity as idlib
from . import preview, services
from .common import (CROPS, FACE_MODEL, FACES, IDENTITY, check_finite, images_np, mask_np, progress, to_image,
                     to_mask)

CATEGORY = "SwapForge/Face"
_ANALYZERS: dict = {}
VIDEO_MODES = video.VIDEO_MODES


def _analyzer(name: str, upsample: int = 0, detect_size: int = 1280):
    """Loaded analyzers are kept for the session (dlib loads its models once). dlib's MMOD/HOG detectors run
    in a worker process and every analyzer checks ComfyUI's Cancel while it works."""
    key = (name, upsample, detect_size)
    if key not in _ANALYZERS:
        _ANALYZERS[key] = detect.load_analyzer(name, services.folder_paths_for("insightface"), upsample,
                                               detect_size=detect_size, worker=True, poll=services.check_interrupt)
    return _ANALYZERS[key]




class SwapForgeFaceModelLoader:
    DESCRIPTION = ("Loads a face analyzer: detection, 5 keypoints, 68 landmarks and an identity embedding. "
                   "The embedded models (YuNet, shipped with the pack; dlib's, installed with its requirements) "
                   "need no download; insightface packs are read from models/insightface/models/<pack>/ when "
                   "present.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (FACE_MODEL,)
    RETURN_NAMES = ("face_model",)
    OUTPUT_TOOLTIPS = ("The face analyzer, for Detect Faces, identities and the swaps.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        choices = detect.list_backends(services.folder_paths_for("insightface"))
        return {"required": {"backend": (choices, {
            "default": choices[0],
            "tooltip": "yunet: fast detector (faces from about 15 px, any pose) with dlib's 68 landmarks; the "
                       "default. dlib_mmod: dlib's CNN detector (faces of 80 px and up, about 1 s a frame). "
                       "dlib_hog: frontal faces only. insightface/<pack>: your insightface models "
                       "(non-commercial licence)."}),
            "upsample": ("INT", {"default": 0, "min": 0, "max": 2, "tooltip":
                         "dlib_mmod/dlib_hog only: 0 finds faces of about 80 px and larger (fastest); 1 finds "
                         "faces down to about 40 px but is about 4x slower; 2 down to about 20 px."})},
            "optional": {
            "detect_size": ("INT", {"default": 1280, "min": 256, "max": 8192, "step": 64, "tooltip":
                            "Embedded backends: frames longer than this many pixels are scaled down for "
                            "detection (the landmarks are still found on the full frame). 1280 finds faces down "
                            "to about 15 px in a 1280 px photo; raise it for tiny faces in very large photos "
                            "(slower)."})}}

    def load(self, backend, upsample=0, detect_size=1280):
        return (_analyzer(backend, upsample, detect_size),)


class SwapForgeDetectFaces:
    DESCRIPTION = ("Finds the faces in every frame of an image batch: boxes, scores, 5 keypoints and 68 "
                   "landmarks. Frames without a face keep their place with zero faces.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (FACES, "IMAGE", "INT", "STRING")
    RETURN_NAMES = ("faces", "preview", "face_counts", "report")
    OUTPUT_IS_LIST = (False, False, True, False)
    OUTPUT_TOOLTIPS = ("The faces of each frame.", "The frames with boxes, keypoints and landmarks drawn.",
                       "The number of faces per frame (a list, one INT per frame).",
                       "A one-line summary per frame.")
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "From SwapForge Face Model Loader."}),
            "image": ("IMAGE", {"tooltip": "An image or a video batch."}),
            "threshold": ("FLOAT", {"default": 0.5, "min": -5.0, "max": 5.0, "step": 0.01,
                                    "tooltip": "Minimum detector score. yunet scores are 0..1 and it keeps faces "
                                               "from 0.6 (real faces score 0.7-0.95); dlib scores run from about "
                                               "-1 to 2 (0.5 keeps clear faces); insightface scores are 0..1."}),
            "min_size": ("INT", {"default": 0, "min": 0, "max": 4096,
                                 "tooltip": "Ignore faces whose box is smaller than this many pixels (0 keeps "
                                            "every face the detector finds)."}),
            "max_faces": ("INT", {"default": 0, "min": 0, "max": 64,
                                  "tooltip": "Keep at most this many faces per frame (0 = all)."}),
            "order": (list(detect.ORDERS), {"default": "largest_first",
                                            "tooltip": "How faces are numbered in each frame (index 0 first)."}),
        }, "optional": {
            "video_mode": (list(VIDEO_MODES), {"default": VIDEO_MODES[0], "tooltip":
                           "For a batch of several frames (a video): track (keyframes) detects every few frames "
                           "and follows the faces in between with stable track ids (fast); detect every frame "
                           "runs the detector on each frame (no ids). A single image is always detected."}),
            "keyframe_interval": ("INT", {"default": 5, "min": 1, "max": 120, "tooltip":
                                  "Track mode: run the detector at least every this many frames (also after a "
                                  "scene change or when a face is lost); 1 detects on every frame."}),
        }}

    def detect(self, face_model, image, threshold, min_size, max_faces, order, video_mode=VIDEO_MODES[0],
               keyframe_interval=5):
        check_finite("SwapForge Detect Faces", threshold=threshold)
        frames = images_np(image)
        stats = {}
        faces = video.detect_or_track(face_model, frames, threshold, min_size, max_faces, order,
                                      video_mode == VIDEO_MODES[0], keyframe_interval, progress(len(frames)), stats)
        counts = faces.counts()
        keys = stats.get("reasons")
        lines = []
        for i, c in enumerate(counts):
            how = "" if keys is None else (f", detected ({keys[i]})" if i in keys else ", tracked")
            lines.append(f"frame {i}: {c} face(s){how}")
        if keys is not None:
            lines.append(f"video: {len(counts)} frames, detector ran on {len(keys)}, {stats['tracks']} track(s)")
        return (faces, to_image(detect.draw_faces(frames, faces)), counts, "\n".join(lines))


class SwapForgeSelectFaces:
    DESCRIPTION = ("Keeps some of the detected faces in every frame: by index ('0', '0,2', '1-3', 'all') or by "
                   "similarity to a reference identity.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (FACES,)
    RETURN_NAMES = ("faces",)
    OUTPUT_TOOLTIPS = ("The kept faces of every frame (frames keep their place, possibly with no face).",)
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "faces": (FACES, {"tooltip": "Faces from Detect Faces or Track Faces."}),
            "mode": (["index", "identity"], {"default": "index",
                                            "tooltip": "index: pick by position; identity: pick the faces that "
                                                       "look like the connected identity."}),
            "indices": ("STRING", {"default": "0", "tooltip": "For index mode: '0', '0,2', '1-3' or 'all'."}),
            "min_similarity": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.01,
                                         "tooltip": "For identity mode: drop faces less similar than this "
                                                    "(cosine; 0 keeps the best face of each frame)."}),
        }, "optional": {
            "identity": (IDENTITY, {"tooltip": "For identity mode: the person to keep."}),
            "face_model": (FACE_MODEL, {"tooltip": "For identity mode: the analyzer that made the identity."}),
            "image": ("IMAGE", {"tooltip": "The frames the faces were detected on: needed by identity mode; in "
                                           "index mode it only gives the face picker its picture."}),
        }}

    def select(self, faces, mode, indices, min_similarity, identity=None, face_model=None, image=None):
        check_finite("SwapForge Select Faces", min_similarity=min_similarity)
        frames = images_np(image) if image is not None else None
        ui = preview.face_picker_ui(faces, frames, "indices")
        if mode == "index":
            return preview.NodeOutput((idlib.select_by_index(faces, indices),), ui)
        missing = [n for n, v in (("identity", identity), ("face_model", face_model), ("image", image)) if v is None]
        if missing:
            raise ValueError(f"SwapForge Select Faces: identity mode needs the {', '.join(missing)} input(s) "
                             "connected. Connect them, or switch mode to index.")
        faces.check_batch(len(frames))
        return preview.NodeOutput((idlib.select_by_identity(face_model, frames, faces, identity, min_similarity),), ui)


class SwapForgeTrackFaces:
    DESCRIPTION = ("Gives faces stable ids across the frames of a video and smooths their keypoints. A frame "
                   "where the detector lost a face for a short gap gets an interpolated entry, flagged as such. "
                   "Faces from Detect Faces' video tracker keep the ids it gave them.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (FACES, "STRING")
    RETURN_NAMES = ("faces", "report")
    OUTPUT_TOOLTIPS = ("The faces with stable track ids, smoothed keypoints and flagged interpolated entries.", "Tracks, their frame ranges, filled gaps and frames without a face.")
    FUNCTION = "track"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "faces": (FACES, {"tooltip": "Faces of a video batch, from Detect Faces."}),
            "iou_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Minimum box overlap to continue a track."}),
            "max_gap": ("INT", {"default": 5, "min": 0, "max": 120,
                                "tooltip": "Frames a face may be lost and still be filled in by interpolation."}),
            "smoothing": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01,
                                    "tooltip": "Temporal smoothing of boxes and landmarks (0 = none). "
                                               "Forward-backward, so it adds no lag."}),
        }, "optional": {
            "keep_ids": ("BOOLEAN", {"default": True, "tooltip":
                         "Keep the track ids Detect Faces' video tracker gave the faces (only gaps are filled "
                         "and the points smoothed). Off, or for faces without ids: ids by box overlap here."}),
        }}

    def track(self, faces, iou_threshold, max_gap, smoothing, keep_ids=True):
        check_finite("SwapForge Track Faces", iou_threshold=iou_threshold, smoothing=smoothing)
        out, report = track.track_faces(faces, iou_threshold, max_gap, smoothing, progress=progress(len(faces)),
                                        keep_ids=keep_ids)
        return (out, report)


class SwapForgeAlignCrop:
    DESCRIPTION = ("Cuts an aligned square crop of every face (FFHQ or ArcFace alignment). Returns the crops, "
                   "the crop record Paste Back needs, and a face-region mask per crop. A frame with no face gets "
                   "a placeholder crop, so a one-face video keeps one crop per frame.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", CROPS, "MASK")
    RETURN_NAMES = ("crops", "crop_info", "crop_masks")
    OUTPUT_TOOLTIPS = ("One aligned square crop per face (placeholders for frames without a face).", "The crop record Paste Back needs: affine, frame and face index per crop.", "A face-region mask per crop (all zero for placeholders).")
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The frames the faces were detected on."}),
            "faces": (FACES, {"tooltip": "Faces from Detect, Select or Track Faces."}),
            "size": (["256", "512", "1024"], {"default": "512", "tooltip": "Crop size in pixels."}),
            "template": (list(align.TEMPLATES), {"default": "ffhq",
                                                 "tooltip": "ffhq: the FFHQ dataset alignment (StyleGAN, "
                                                            "diffusion models); arcface: the tight 5-point "
                                                            "ArcFace alignment."}),
        }}

    def crop(self, image, faces, size, template):
        frames = images_np(image)
        faces.check_batch(len(frames))
        crops, info, masks = align.align_crop(frames, faces, int(size), template,
                                              progress=progress(sum(max(c, 1) for c in faces.counts())))
        return (to_image(crops), info, to_mask(masks))


class SwapForgePasteBack:
    DESCRIPTION = ("Warps edited crops back into their frames through a feathered, erodible mask, with optional "
                   "colour matching. Pixels outside the mask come back bit-identical.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The frames with the crops pasted back; untouched outside the mask.", "Where each frame was changed (the feathered mask actually used).")
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The original frames."}),
            "crops": ("IMAGE", {"tooltip": "The edited crops, one per row of crop_info (any size: resized)."}),
            "crop_info": (CROPS, {"tooltip": "From Align & Crop."}),
            "erode": ("INT", {"default": 8, "min": -256, "max": 256,
                              "tooltip": "Shrink the mask by this many pixels (negative grows it)."}),
            "feather": ("INT", {"default": 16, "min": 0, "max": 512,
                                "tooltip": "Soften the mask edge over about this many pixels."}),
            "color_match": (["none", "rgb", "lab"], {"default": "none",
                                                    "tooltip": "Match the crop's colours to the frame inside the "
                                                               "mask before pasting."}),
        }, "optional": {
            "crop_masks": ("MASK", {"tooltip": "Where to paste, in crop space: connect Align & Crop's "
                                               "crop_masks. Without it the whole crop square is pasted."}),
        }}

    def paste(self, image, crops, crop_info, erode, feather, color_match, crop_masks=None):
        frames = images_np(image)
        masks = mask_np(crop_masks) if crop_masks is not None else None
        out, mask = paste.paste_back(frames, images_np(crops), crop_info, masks, erode, feather, color_match,
                                     progress=progress(len(crop_info)))
        return (to_image(out), to_mask(mask))


class SwapForgeBuildIdentity:
    DESCRIPTION = "Builds an identity (mean face embedding) from one or several photos of one person."
    CATEGORY = CATEGORY
    RETURN_TYPES = (IDENTITY, "STRING")
    RETURN_NAMES = ("identity", "report")
    OUTPUT_TOOLTIPS = ("The identity: a mean face embedding.", "How many photos had a face, and the backend.")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "The analyzer whose embeddings to use."}),
            "images": ("IMAGE", {"tooltip": "Photos of one person; the largest face of each is used."}),
            "name": ("STRING", {"default": "person", "tooltip": "A name stored with the identity."}),
        }}

    def build(self, face_model, images, name):
        frames = images_np(images)
        ident = idlib.build_identity(face_model, frames, None, name, progress=progress(len(frames)))
        return (ident, f"identity '{ident.name}' from {ident.num_images} of {len(frames)} photo(s), "
                       f"{ident.backend}, {ident.embedding.size}-d")


class SwapForgeSaveIdentity:
    DESCRIPTION = "Saves an identity as a .safetensors file in models/swapforge/identities."
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "identity": (IDENTITY, {"tooltip": "From Build Identity."}),
            "filename": ("STRING", {"default": "person", "tooltip": "File name (.safetensors is added)."}),
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace an existing file of that name."}),
        }}

    def save(self, identity, filename, overwrite):
        path = services.new_file_path("swapforge_identities", filename, "person", overwrite)
        idlib.save_identity(identity, path)
        return {"ui": {"text": [f"saved {path}"]}}


class SwapForgeLoadIdentity:
    DESCRIPTION = "Loads an identity saved by Save Identity from models/swapforge/identities."
    CATEGORY = CATEGORY
    RETURN_TYPES = (IDENTITY,)
    RETURN_NAMES = ("identity",)
    OUTPUT_TOOLTIPS = ("The identity stored in the file.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (services.list_files("swapforge_identities"), {
            "tooltip": "An identity file in models/swapforge/identities."})}}

    def load(self, name):
        path = services.require_file("swapforge_identities", name,
                                     "Save one with Save Identity (identities are .safetensors files).")
        return (idlib.load_identity(path),)


class SwapForgeIdentitySimilarity:
    DESCRIPTION = ("How much each frame's best face looks like an identity: a FLOAT per frame (cosine "
                   "similarity; 0 for frames without a face) and a summary.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("similarity", "summary")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = ("Cosine similarity per frame (a list, one FLOAT per frame; 0 where no face).", "Matches, frames without a face, mean/min/max.")
    FUNCTION = "compare"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "The analyzer that made the identity."}),
            "image": ("IMAGE", {"tooltip": "Frames to score."}),
            "identity": (IDENTITY, {"tooltip": "The reference person."}),
        }, "optional": {
            "faces": (FACES, {"tooltip": "Faces already detected on these frames (else detected here)."}),
        }}

    def compare(self, face_model, image, identity, faces=None):
        frames = images_np(image)
        if faces is None:
            faces = video.detect_or_track(face_model, frames, progress=progress(len(frames)))
        faces.check_batch(len(frames))
        scores, best = idlib.similarity_per_frame(face_model, frames, faces, identity,
                                                  progress=progress(len(frames)))
        return ([float(s) for s in scores], idlib.similarity_summary(scores, best, identity, face_model))


NODE_CLASS_MAPPINGS = {
    "SwapForge_FaceModelLoader": SwapForgeFaceModelLoader,
    "SwapForge_DetectFaces": SwapForgeDetectFaces,
    "SwapForge_SelectFaces": SwapForgeSelectFaces,
    "SwapForge_TrackFaces": SwapForgeTrackFaces,
    "SwapForge_AlignCrop": SwapForgeAlignCrop,
    "SwapForge_PasteBack": SwapForgePasteBack,
    "SwapForge_BuildIdentity": SwapForgeBuildIdentity,
    "SwapForge_SaveIdentity": SwapForgeSaveIdentity,
    "SwapForge_LoadIdentity": SwapForgeLoadIdentity,
    "SwapForge_IdentitySimilarity": SwapForgeIdentitySimilarity,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SwapForge_FaceModelLoader": "Face Model Loader (SwapForge)",
    "SwapForge_DetectFaces": "Detect Faces (SwapForge)",
    "SwapForge_SelectFaces": "Select Faces (SwapForge)",
    "SwapForge_TrackFaces": "Track Faces (SwapForge)",
    "SwapForge_AlignCrop": "Align & Crop Faces (SwapForge)",
    "SwapForge_PasteBack": "Paste Back (SwapForge)",
    "SwapForge_BuildIdentity": "Build Identity (SwapForge)",
    "SwapForge_SaveIdentity": "Save Identity (SwapForge)",
    "SwapForge_LoadIdentity": "Load Identity (SwapForge)",
    "SwapForge_IdentitySimilarity": "Identity Similarity (SwapForge)",
}
