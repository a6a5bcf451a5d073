"""Part swap family, diffusion path: FuseAnyPart (NeurIPS 2024) as ComfyUI stages.

Face parts (nodes/partswap.py) -> CLIP Part Encoder -> Mask Fusion (eq. 3) -> Addition Injector (eq. 4,
a patched clone of the MODEL) ; FuseAnyPart Conditioning (VAE + masked reference latent, the swapped parts'
mask) -> a stock KSampler (the authors: DDIM, 50 steps, cfg 7.5), or SamplerCustomAdvanced with FuseAnyPart
Noise for the authors' 0.18215-scaled initial noise -> VAE Decode -> Paste Back through the swapped parts' mask.
"""
from __future__ import annotations

import torch

from ..models.face.identity import person_label, person_per_frame
from ..models.fuseanypart import clip_inputs, fusion, pipeline, reference
from ..models.partswap import part_detect
from . import services
from .common import FACE_MODEL, PARTS, PARTS_TYPE, images_np, progress, to_image

CATEGORY = "SwapForge/Part swap/FuseAnyPart"
FEATURES = "SWAPFORGE_PART_FEATURES"
COND = "SWAPFORGE_FAP_COND"
ADAPTER = "SWAPFORGE_FAP_ADAPTER"
FAP_EXTS = (".bin", ".safetensors", ".sft")


def _boxes_of(partset, face_index: int, what: str):
    """One part-box dict per frame: one person's face in each frame (identity.person_per_frame: the track
    with that id after Track Faces, else face `face_index` of each frame); an error names frames without it."""
    out, missing = [], []
    for i, (faces, k) in enumerate(zip(partset.frames, person_per_frame(partset, face_index))):
        if k is not None:
            out.append(faces[k].as_dict())
        else:
            missing.append(i)
    if missing:
        raise ValueError(f"SwapForge FuseAnyPart: the {what} has no {person_label(partset, face_index)} in frame(s) "
                         f"{missing}. "
                         "FuseAnyPart needs a face in every target crop: select the frames with a face, or use "
                         "Align & Crop's crops (one face each).")
    return out


class SwapForgeFuseAnyPartLoader:
    DESCRIPTION = ("Loads FuseAnyPart's fap.bin (or the pack's .safetensors export) from models/swapforge/fuseanypart: "
                   "the fine-tuned 9-channel SD1.5 inpainting UNet as a MODEL, and the part MLP with its 16 "
                   "per-layer projectors as the adapter.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", ADAPTER)
    RETURN_NAMES = ("model", "fap_adapter")
    OUTPUT_TOOLTIPS = ("The FuseAnyPart UNet (input channels in ComfyUI's inpaint order).",
                       "The part MLP and per-layer projectors, for the Addition Injector.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"fap_name": (services.list_files("swapforge_fuseanypart", FAP_EXTS), {
            "tooltip": "fap.bin from the FuseAnyPart authors' release (about 3.4 GB), in "
                       "models/swapforge/fuseanypart."})}}

    def load(self, fap_name):
        path = services.require_file(
            "swapforge_fuseanypart", fap_name,
            "Expected fap.bin (about 3.4 GB) from the FuseAnyPart authors' release (hub repo Thomas-Tom/FuseAnyPart; "
            "no licence stated: research use).")
        unet_sd, adapter = pipeline.load_fap(path)
        return (services.load_diffusion_model(unet_sd, path), adapter)


CLIP_RESIZE = {"authors (256 px, then 224)": clip_inputs.AUTHORS_CLIP_RESIZE, "standard (224)": None}


class SwapForgeCLIPPartEncoder:
    DESCRIPTION = ("Encodes the target (the boxes of the parts that have a reference painted skin colour; the "
                   "other parts are kept) and each part reference (black except its box) with CLIP vision, "
                   "keeping the penultimate 257 tokens, plus the tokens of the input that is exactly zero after "
                   "normalisation, for the unconditional branch. Any reference may be the same photo; any may be "
                   "left out.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (FEATURES,)
    RETURN_NAMES = ("part_features",)
    OUTPUT_TOOLTIPS = ("CLIP tokens of the target, the references and the zero input, with their part boxes.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        ref = "A photo to take the {0} from (first image of the batch); needs {0}_parts."
        refp = "Face Parts of the {0} photo (its face 0 is used)."
        opt = {}
        for p in PARTS:
            opt[f"{p}_image"] = ("IMAGE", {"tooltip": ref.format(p)})
            opt[f"{p}_parts"] = (PARTS_TYPE, {"tooltip": refp.format(p)})
        opt["clip_resize"] = (list(CLIP_RESIZE), {
            "default": next(iter(CLIP_RESIZE)),
            "tooltip": "authors: every image to 256 px (PIL bicubic) before CLIP's own 224 px preprocessing, as the "
                       "FuseAnyPart authors' inference does. standard: straight to 224."})
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "CLIP ViT-H/14 vision (the width fap.bin was trained with; "
                                                       "the injector refuses another width)."}),
            "target": ("IMAGE", {"tooltip": "Square aligned face crops (Align & Crop, ffhq, 512)."}),
            "target_parts": (PARTS_TYPE, {"tooltip": "Face Parts of the target crops."}),
        }, "optional": opt}

    def encode(self, clip_vision, target, target_parts, clip_resize=next(iter(CLIP_RESIZE)), **refs):
        if clip_resize not in CLIP_RESIZE:
            raise ValueError(f"SwapForge CLIP Part Encoder: clip_resize must be one of {list(CLIP_RESIZE)}, got "
                             f"{clip_resize!r}.")
        boxes = _boxes_of(target_parts, 0, "target")
        if len(boxes) != target.shape[0]:
            raise ValueError(f"SwapForge CLIP Part Encoder: {len(boxes)} frame(s) of parts for {target.shape[0]} "
                             "target image(s). Connect the parts computed on these target images.")
        references = {}
        for p in PARTS:
            img, parts = refs.get(f"{p}_image"), refs.get(f"{p}_parts")
            if (img is None) != (parts is None):
                raise ValueError(f"SwapForge CLIP Part Encoder: connect both {p}_image and {p}_parts (or neither).")
            if img is not None:
                references[p] = (img[:1], _boxes_of(parts, 0, f"{p} reference")[0][p])
        bar = progress(2 + len(references))

        def encode_quiet(images):
            return clip_vision.encode_image(images).penultimate_hidden_states.float().cpu()

        def encode(images):
            out = encode_quiet(images)
            bar()
            return out

        def encode_uncond():  # exactly zero after normalisation, as the authors' torch.zeros input
            size = int(getattr(clip_vision, "image_size", clip_inputs.CLIP_SIZE))
            out = services.clip_vision_pixels(clip_vision, clip_inputs.zero_pixel_values(size))
            out = encode_quiet(clip_inputs.zero_image(size)) if out is None else out.float().cpu()
            bar()
            return out

        return (pipeline.encode_parts(encode, target.float(), boxes, references, encode_uncond=encode_uncond,
                                      pre_resize=CLIP_RESIZE[clip_resize], encode_later=encode_quiet),)


class SwapForgeReferenceParts:
    DESCRIPTION = ("One FuseAnyPart reference in one node: the largest face of the photo, aligned (FFHQ, 512), found "
                   "again on the crop, and its part boxes. The stage-by-stage template wires the same steps as Detect "
                   "Faces -> Align & Crop -> Detect Faces -> Part Detector; use this node to add references compactly.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", PARTS_TYPE, "STRING")
    RETURN_NAMES = ("crop", "parts", "report")
    OUTPUT_TOOLTIPS = ("The aligned crop of the reference face (one image).",
                       "Its part boxes, for the CLIP Part Encoder's <part>_parts input.",
                       "Where the face was found and where its part boxes came from.")
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face_model": (FACE_MODEL, {"tooltip": "From Face Model Loader: finds the face in the photo and on its crop."}),
            "image": ("IMAGE", {"tooltip": "The reference photo (its first image; the largest face is used)."}),
            "size": (["512", "256", "1024"], {"default": "512", "tooltip": "Aligned crop size (FuseAnyPart: 512)."}),
            "backend": (["landmarks", "grounding_dino"], {"default": "landmarks", "tooltip":
                        "landmarks: part boxes from the 68 landmarks. grounding_dino: the paper's text-prompted "
                        "detector (connect Load Grounding DINO), landmarks where it finds nothing."}),
        }, "optional": {
            "grounding_dino": ("SWAPFORGE_GROUNDING_DINO", {"tooltip": "From Load Grounding DINO, for the "
                                                                       "grounding_dino backend."}),
        }}

    def prepare(self, face_model, image, size, backend, grounding_dino=None):
        if backend == "grounding_dino" and grounding_dino is None:
            raise ValueError("SwapForge Reference Parts: the grounding_dino backend needs a model. Connect Load "
                             "Grounding DINO, or choose the landmarks backend.")
        detector = grounding_dino.ready() if backend == "grounding_dino" else None
        crop, partset, line = reference.reference_parts(face_model, images_np(image), int(size), "ffhq", detector,
                                                        part_detect.DEFAULT_PROMPTS, progress=progress(1))
        return (to_image(crop), partset, line)


class SwapForgeMaskFusion:
    DESCRIPTION = ("Paper eq. 3: pastes each reference part's CLIP patch features (its box on the 16x16 grid, "
                   "nearest-resized) into the target's grid at the target's box. CLS stays the target's.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("fap_cond",)
    OUTPUT_TOOLTIPS = ("The fused features and the unconditional features, for the Addition Injector.",)
    FUNCTION = "fuse"

    @classmethod
    def INPUT_TYPES(cls):
        req = {"part_features": (FEATURES, {"tooltip": "From CLIP Part Encoder."})}
        for p in PARTS:
            req[f"swap_{p}"] = ("BOOLEAN", {"default": True, "tooltip": f"Take the {p} from its reference (when "
                                                                        "one is connected); off keeps the target's "
                                                                        "(not painted, not inpainted)."})
        return {"required": req}

    def fuse(self, part_features, swap_eyes, swap_nose, swap_mouth):
        f = part_features
        enabled = {"eyes": swap_eyes, "nose": swap_nose, "mouth": swap_mouth}
        swapped = tuple(p for p in PARTS if enabled[p] and p in f.sources)
        # eq. 3 keeps the target's features for a part not swapped: its box must not be painted in the target
        tokens = f.target_tokens_for(swapped)
        return (fusion.make_condition(tokens, f.sources, f.target_boxes, f.uncond, enabled),)


class SwapForgeAdditionInjector:
    DESCRIPTION = ("Paper eq. 4 on all 16 cross-attention layers, as the released inference: each layer outputs "
                   "to_out(lambda * upsampled projector(MLP(fused features))) instead of text attention; the "
                   "unconditional rows get the zero-input features. Returns a patched clone; the input MODEL is "
                   "not modified.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The patched model, for a KSampler (text prompts have no effect while it is active).",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The FuseAnyPart UNet from FuseAnyPart Loader."}),
            "fap_adapter": (ADAPTER, {"tooltip": "From FuseAnyPart Loader."}),
            "fap_cond": (COND, {"tooltip": "From Mask Fusion."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05,
                                   "tooltip": "lambda of eq. 4 (the authors use 1.0)."}),
            "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Sampling progress where the injection starts."}),
            "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Sampling progress where it stops (plain text attention "
                                                 "outside the range)."}),
        }}

    def patch(self, model, fap_adapter, fap_cond, strength, start_percent, end_percent):
        if start_percent > end_percent:
            raise ValueError("SwapForge Addition Injector: start_percent is after end_percent. Make start <= end.")
        sigma_start = sigma_end = None
        if start_percent > 0.0 or end_percent < 1.0:
            ms = model.get_model_object("model_sampling")
            sigma_start, sigma_end = float(ms.percent_to_sigma(start_percent)), float(ms.percent_to_sigma(end_percent))
        m = model.clone()
        for key, p in pipeline.attn2_patches(fap_adapter, fap_cond, strength, sigma_start, sigma_end):
            m.set_model_attn2_replace(p, *key)
        return (m,)


class SwapForgeFuseAnyPartConditioning:
    DESCRIPTION = ("The inpainting inputs of FuseAnyPart: VAE-encodes the target with the swapped parts' boxes "
                   "skin-filled, fills the latent inside those boxes with seeded noise, and returns conditioning "
                   "(carrying the concat latent and mask), an empty LATENT for a stock sampler, and the swapped "
                   "parts' mask for Paste Back, so kept parts come back unchanged. The authors sample with DDIM, "
                   "50 steps, cfg 7.5, at 512 px.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "MASK")
    RETURN_NAMES = ("positive", "negative", "latent", "swap_mask")
    OUTPUT_TOOLTIPS = ("Positive conditioning (text is ignored by the injection; an empty context is used).",
                       "Negative conditioning (the injector feeds it the zero-input features).",
                       "Empty latent of the target's size: sample it at denoise 1.0.",
                       "The swapped parts' boxes (1 inside) at the target's size: connect it to Paste Back's "
                       "crop_masks so only they are pasted and kept parts stay as they were.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VAE", {"tooltip": "The SD1.5 VAE (the authors use the base model's)."}),
            "target": ("IMAGE", {"tooltip": "The same square target crops as the CLIP Part Encoder's."}),
            "target_parts": (PARTS_TYPE, {"tooltip": "Face Parts of the target crops."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Seed of the noise put in the latent inside the part boxes."}),
        }, "optional": {
            "fap_cond": (COND, {"tooltip": "From Mask Fusion: only the parts it swaps are painted and inpainted. "
                                           "Without it all three parts are (the authors' all-parts swap)."}),
        }}

    def encode(self, vae, target, target_parts, seed, fap_cond=None):
        b, h, w, _ = target.shape
        if h != w or h % 64:
            raise ValueError(f"SwapForge FuseAnyPart: the target is {w}x{h}; FuseAnyPart works on square crops whose "
                             "side is a multiple of 64 (it was trained at 512). Use Align & Crop at 512.")
        boxes = _boxes_of(target_parts, 0, "target")
        if len(boxes) != b:
            raise ValueError(f"SwapForge FuseAnyPart Conditioning: {len(boxes)} frame(s) of parts for {b} target(s).")
        parts = PARTS if fap_cond is None else tuple(fap_cond.parts)
        skin = clip_inputs.skin_fill_target(target.float().cpu(), boxes, parts=parts)
        latent = vae.encode(skin[..., :3]).float().cpu()
        full = clip_inputs.boxes_mask(boxes, (h, w), parts=parts)
        mask = clip_inputs.latent_mask(full, tuple(latent.shape[-2:]))
        concat = pipeline.inpaint_concat_latent(latent, mask, seed)
        context = torch.zeros((1, 77, 768))
        extra = {"concat_latent_image": concat, "concat_mask": mask}
        cond = [[context, dict(extra)]]
        return (cond, [[context.clone(), dict(extra)]], {"samples": torch.zeros_like(latent)},
                full.to(services.intermediate_device()))


class FuseAnyPartNoise:
    """A NOISE for SamplerCustomAdvanced: ComfyUI's seeded initial noise times `scale`."""

    def __init__(self, seed: int, scale: float):
        self.seed, self.scale = int(seed), float(scale)

    def generate_noise(self, input_latent):
        latent = input_latent["samples"]
        return services.prepare_noise(latent, self.seed, input_latent.get("batch_index")) * self.scale


class SwapForgeFuseAnyPartNoise:
    DESCRIPTION = ("The authors' initial noise, for SamplerCustomAdvanced: their pipeline starts from Gaussian noise "
                   "times the VAE scale 0.18215 (std 0.18215, not 1), a quirk of the released inference. scale 1 "
                   "is ComfyUI's standard noise (what KSampler uses).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("NOISE",)
    RETURN_NAMES = ("noise",)
    OUTPUT_TOOLTIPS = ("Seeded noise times scale, for SamplerCustomAdvanced's noise input.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                   "tooltip": "Seed of the initial noise (same numbers as RandomNoise's)."}),
            "scale": ("FLOAT", {"default": pipeline.SD15_LATENT_SCALE, "min": 0.0, "max": 2.0, "step": 0.00001,
                                "tooltip": "0.18215: the authors' quirk (their pipeline multiplies the initial noise "
                                           "by the VAE scale). 1.0: standard sampling."}),
        }}

    def make(self, noise_seed, scale):
        return (FuseAnyPartNoise(noise_seed, scale),)


NODE_CLASS_MAPPINGS = {
    "SwapForge_FuseAnyPartLoader": SwapForgeFuseAnyPartLoader,
    "SwapForge_CLIPPartEncoder": SwapForgeCLIPPartEncoder,
    "SwapForge_ReferenceParts": SwapForgeReferenceParts,
    "SwapForge_MaskFusion": SwapForgeMaskFusion,
    "SwapForge_AdditionInjector": SwapForgeAdditionInjector,
    "SwapForge_FuseAnyPartConditioning": SwapForgeFuseAnyPartConditioning,
    "SwapForge_FuseAnyPartNoise": SwapForgeFuseAnyPartNoise,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SwapForge_FuseAnyPartLoader": "FuseAnyPart Loader (SwapForge)",
    "SwapForge_CLIPPartEncoder": "CLIP Part Encoder (SwapForge)",
    "SwapForge_ReferenceParts": "Reference Parts (SwapForge)",
    "SwapForge_MaskFusion": "Mask Fusion (SwapForge)",
    "SwapForge_AdditionInjector": "Addition Injector (SwapForge)",
    "SwapForge_FuseAnyPartConditioning": "FuseAnyPart Conditioning (SwapForge)",
    "SwapForge_FuseAnyPartNoise": "FuseAnyPart Noise (SwapForge)",
}
