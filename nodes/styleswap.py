"""Face swap family: "High-Fidelity Face Swapping with Style Blending" (arXiv 2312.10843) as ComfyUI nodes.

All-in-one: StyleSwap Loader -> Face Swap (detect, FFHQ align, encode, blend, decode, paste back, per frame).
Stages, for inspecting the model: Style Encoder (E) -> Style Blend (SBM, eq. 2) -> Style Decoder (D).
pSp/e4e encoders and rosinality StyleGAN2 generators load on their own for reconstructions.

Sockets that take one of two model kinds use ComfyUI's union types ("A,B": ComfyUI's validation and the
frontend accept a link whose type is any of the listed ones); the node tells the kinds apart by value.
"""
from __future__ import annotations

import torch

from ..models.face import detect, video
from ..models.styleswap import checkpoints, sbm
from ..models.styleswap import swapper as sw
from ..models.styleswap.encoder import StyleEncoder
from ..models.styleswap.stylegan2 import Generator
from . import preview, services
from .common import CROPS, FACE_MODEL, FACES, images_np, progress, to_image, to_mask

CATEGORY = "SwapForge/Face swap"
SWAPPER = "SWAPFORGE_STYLESWAP"
ENCODER = "SWAPFORGE_STYLE_ENCODER"
STYLEGAN2 = "SWAPFORGE_STYLEGAN2"
STYLE = "SWAPFORGE_STYLE"
ANY_ENCODER = f"{SWAPPER},{ENCODER}"
ANY_DECODER = f"{SWAPPER},{STYLEGAN2}"
PSP_EXTS = (".pt", ".pth")
#: The StyleSwap Loader's only choice while models/swapforge/styleswap holds no swapper: picking it (the default)
#: gives the pack's message (the folder, how to train or compose one) instead of ComfyUI's bare
#: "Value not in list: ... not in []".
NO_SWAPPER = "(no swapper in models/swapforge/styleswap: run to see how to make one)"
STYLEGAN_EXTS = (".pt", ".pth", ".safetensors")


def _managed(module: torch.nn.Module) -> services.ManagedModel:
    """Place a loaded module with ComfyUI's memory manager, in the dtype ComfyUI picks for the device."""
    module = module.to(services.compute_dtype(services.torch_device())).eval()
    return services.ManagedModel(module)


def _module(managed, kinds, what: str):
    module = managed.load() if isinstance(managed, services.ManagedModel) else managed
    if not isinstance(module, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"SwapForge: the {what} input got a {type(module).__name__}; expected a {names}. "
                        "Connect the matching loader.")
    return module


class SwapForgeStyleSwapLoader:
    DESCRIPTION = ("Loads a StyleSwap face swapper (encoder, Style Blending Module, StyleGAN2 decoder) from "
                   "models/swapforge/styleswap. No public weights exist for this paper: train one with "
                   "`python -m models.styleswap.train`.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (SWAPPER,)
    RETURN_NAMES = ("swapper",)
    OUTPUT_TOOLTIPS = ("The swapper, for Face Swap and the Style Encoder / Blend / Decoder nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = services.list_files("swapforge_styleswap", (".safetensors",)) or [NO_SWAPPER]
        return {"required": {"swapper_name": (files, {
            "tooltip": "A swapper .safetensors (format swapforge_styleswap_v1) in models/swapforge/styleswap. No "
                       "public weights exist: train one, or compose one from pSp + StyleGAN2 (the node says how)."})}}

    def load(self, swapper_name):
        path = None if swapper_name == NO_SWAPPER else services.full_path("swapforge_styleswap", swapper_name)
        if path is None:
            raise FileNotFoundError(checkpoints.missing_swapper_message(
                f"{swapper_name} (looked in {services.folder_paths_for('swapforge_styleswap')})"))
        return (_managed(checkpoints.load_swapper(path)),)


class SwapForgePSPEncoderLoader:
    DESCRIPTION = ("Loads a pSp or e4e encoder (psp_ffhq_encode.pt / e4e_ffhq_encode.pt, MIT code, FFHQ-trained) "
                   "from models/swapforge/psp, with its average latent folded in, for Style Encoder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (ENCODER,)
    RETURN_NAMES = ("style_encoder",)
    OUTPUT_TOOLTIPS = ("The style encoder: aligned faces to StyleGAN2 W+ codes and pyramid features.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoder_name": (services.list_files("swapforge_psp", PSP_EXTS), {
                "tooltip": "psp_ffhq_encode.pt or e4e_ffhq_encode.pt in models/swapforge/psp."}),
            "kind": (["auto", "psp", "e4e"], {"default": "auto", "tooltip":
                     "auto reads the checkpoint's opts; pSp and e4e have the same weights but e4e adds w_0 to "
                     "every other code, so a wrong choice gives wrong codes."}),
        }}

    def load(self, encoder_name, kind):
        path = services.require_file("swapforge_psp", encoder_name,
                                     "Expected psp_ffhq_encode.pt (pSp) or e4e_ffhq_encode.pt (e4e).")
        return (_managed(checkpoints.load_psp_encoder(path, None if kind == "auto" else kind)),)


class SwapForgeStyleGAN2Loader:
    DESCRIPTION = ("Loads a rosinality StyleGAN2 generator (stylegan2-ffhq-config-f.pt, its g_ema) from "
                   "models/swapforge/stylegan2, in pure PyTorch (no CUDA extension to compile).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (STYLEGAN2,)
    RETURN_NAMES = ("stylegan2",)
    OUTPUT_TOOLTIPS = ("The StyleGAN2 generator, for Style Decoder.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"generator_name": (services.list_files("swapforge_stylegan2", STYLEGAN_EXTS), {
            "tooltip": "stylegan2-ffhq-config-f.pt (rosinality's converted FFHQ weights; NVIDIA licence, "
                       "non-commercial) in models/swapforge/stylegan2."})}}

    def load(self, generator_name):
        path = services.require_file("swapforge_stylegan2", generator_name, "Expected stylegan2-ffhq-config-f.pt.")
        return (_managed(checkpoints.load_stylegan2(path)[0]),)


class SwapForgeStyleEncoder:
    DESCRIPTION = ("Paper Sec. 3.1: encodes aligned FFHQ face crops into W+ style codes and pyramid features, "
                   "with a swapper's encoder or a pSp/e4e encoder (crops are resized to 256 px).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (STYLE,)
    RETURN_NAMES = ("style",)
    OUTPUT_TOOLTIPS = ("The style codes of the crops (one per crop) with their encoder features.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoder": (ANY_ENCODER, {"tooltip": "A swapper (StyleSwap Loader) or a pSp/e4e encoder "
                                                 "(pSp Encoder Loader)."}),
            "crops": ("IMAGE", {"tooltip": "Aligned face crops (Align & Crop, template ffhq), any square size."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                   "tooltip": "Crops per forward pass (lower it if memory runs out)."}),
        }}

    def encode(self, encoder, crops, batch_size):
        module = _module(encoder, (sw.Swapper, StyleEncoder), "encoder")
        arr = images_np(crops)
        return (sw.encode_images(module, arr, batch_size, progress=progress(len(arr))),)


class SwapForgeStyleBlend:
    DESCRIPTION = ("Paper Sec. 3.2, eq. 2: the Style Blending Module mixes source and target codes element-wise, "
                   "W' = A_w^t * Wt + (1 - A_w^t) * Ws. Also draws A_w^t (blue: from the source, orange: target).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (STYLE, "IMAGE")
    RETURN_NAMES = ("style", "weights")
    OUTPUT_TOOLTIPS = ("The blended codes, carrying the target's features for the decoder shortcut.",
                       "Heat map of A_w^t per crop: one row band per style element (coarse at the top), one "
                       "column per channel.")
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "swapper": (SWAPPER, {"tooltip": "The swapper whose Style Blending Module to use."}),
            "source_style": (STYLE, {"tooltip": "Codes of the source face(s): the identity to put in."}),
            "target_style": (STYLE, {"tooltip": "Codes of the target face(s): pose, expression, lighting."}),
            "strength": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                   "0: the blend (eq. 2); 1: the target's own codes. Raise it to keep more of "
                                   "the target where the swap looks off."}),
            "average_source": ("BOOLEAN", {"default": True, "tooltip":
                                           "Average all source codes (several photos of one person) and blend "
                                           "that with every target; off: source i with target i."}),
        }}

    def blend(self, swapper, source_style, target_style, strength, average_source):
        module = _module(swapper, (sw.Swapper,), "swapper")
        out = sw.blend_codes(module, source_style, target_style, strength, average_source)
        return (out, to_image(sbm.weights_image(out.weights).numpy()))


class SwapForgeStyleDecoder:
    DESCRIPTION = ("Paper Sec. 3.3: decodes style codes into face crops with a swapper's StyleGAN2 decoder "
                   "(optionally adding the target's features through its shortcut) or a plain StyleGAN2.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("crops",)
    OUTPUT_TOOLTIPS = ("Decoded aligned face crops at the decoder's size, 0..1 (Paste Back resizes them).",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "decoder": (ANY_DECODER, {"tooltip": "A swapper (StyleSwap Loader) or a StyleGAN2 generator "
                                                 "(StyleGAN2 Loader)."}),
            "style": (STYLE, {"tooltip": "Codes from Style Encoder or Style Blend."}),
            "use_target_features": ("BOOLEAN", {"default": True, "tooltip":
                                                "Add the encoder features carried by the codes through the "
                                                "swapper's shortcut (the paper's path). Swapper only: turn it off "
                                                "for a plain StyleGAN2."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 256,
                                   "tooltip": "Codes per forward pass (lower it if memory runs out)."}),
        }}

    def decode(self, decoder, style, use_target_features, batch_size):
        module = _module(decoder, (sw.Swapper, Generator), "decoder")
        out = sw.decode_codes(module, style, use_target_features, batch_size, progress=progress(len(style)))
        return (to_image(out),)


class SwapForgeFaceSwap:
    DESCRIPTION = ("Swaps the source person into every frame of an image or video batch with a StyleSwap "
                   "swapper: detect, FFHQ align, encode, blend (SBM), decode, paste back. The source photos are "
                   "encoded once and averaged. Frames without the face pass through unchanged and are reported.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", CROPS, "STRING")
    RETURN_NAMES = ("image", "mask", "crops", "crop_info", "status")
    OUTPUT_TOOLTIPS = ("The frames with the face swapped (frames without a face unchanged).",
                       "Where each frame was changed (the feathered paste mask).",
                       "The swapped aligned crops at the swapper's output size (256 for the paper's model; Paste "
                       "Back resizes them), placeholders for frames without a face.",
                       "The crop record, for Paste Back with other settings.",
                       "One line per frame: swapped, or why not; and the source photos used.")
    FUNCTION = "swap"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "swapper": (SWAPPER, {"tooltip": "From StyleSwap Loader."}),
            "face_model": (FACE_MODEL, {"tooltip": "Detects and aligns the faces of the source and the target."}),
            "source": ("IMAGE", {"tooltip": "One or more photos of the person to put in (the largest face of "
                                            "each; their codes are averaged)."}),
            "target": ("IMAGE", {"tooltip": "The image or video batch to edit."}),
            "strength": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                   "0: the swap (the paper's blend); 1: the target's own codes (reconstruction)."}),
            "face_index": ("INT", {"default": 0, "min": -1, "max": 63,
                                   "tooltip": "Which target face to swap in each frame (-1: every face). With "
                                              "tracked target_faces: the k-th tracked person, followed through "
                                              "every frame; untracked: face k of each frame."}),
            "crop_size": (["256", "512", "1024"], {"default": "256", "tooltip":
                          "Aligned crop size to paste back. The swapper reads 256 px and outputs its own size "
                          "(256 for the paper's model); other sizes are resized."}),
            "erode": ("INT", {"default": 8, "min": -256, "max": 256,
                              "tooltip": "Shrink the paste mask by this many pixels (negative grows it)."}),
            "feather": ("INT", {"default": 16, "min": 0, "max": 512,
                                "tooltip": "Soften the paste mask edge over about this many pixels."}),
            "color_match": (["none", "rgb", "lab"], {"default": "none", "tooltip":
                            "Match the swapped face's colours to the frame inside the mask before pasting."}),
            "frames_per_chunk": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip":
                                 "Frames processed together (memory bound); progress and cancel between chunks."}),
        }, "optional": {
            "target_faces": (FACES, {"tooltip": "Faces already detected or tracked on the target (else detected "
                                                "here, largest first)."}),
        }}

    def swap(self, swapper, face_model, source, target, strength, face_index, crop_size, erode, feather,
             color_match, frames_per_chunk, target_faces=None):
        module = _module(swapper, (sw.Swapper,), "swapper")
        src = images_np(source)
        src_faces = detect.detect_faces(face_model, src, max_faces=1, order="largest_first")
        code, used = sw.source_code(module, src, src_faces)
        frames = images_np(target)
        if target_faces is None:
            target_faces = video.detect_or_track(face_model, frames, progress=progress(len(frames)))
        res = sw.swap_faces(module, code.w, frames, target_faces, strength, face_index, int(crop_size), erode,
                            feather, color_match, frames_per_chunk, progress=progress(len(frames)))
        report = "\n".join([f"source: {len(used)} of {len(src)} photo(s) with a face (used: {used})"] + res.status)
        return preview.NodeOutput((to_image(res.frames), to_mask(res.mask), to_image(res.crops), res.cropset, report),
                                  preview.face_picker_ui(target_faces, frames, "face_index"))


NODE_CLASS_MAPPINGS = {
    "SwapForge_StyleSwapLoader": SwapForgeStyleSwapLoader,
    "SwapForge_PSPEncoderLoader": SwapForgePSPEncoderLoader,
    "SwapForge_StyleGAN2Loader": SwapForgeStyleGAN2Loader,
    "SwapForge_StyleEncoder": SwapForgeStyleEncoder,
    "SwapForge_StyleBlend": SwapForgeStyleBlend,
    "SwapForge_StyleDecoder": SwapForgeStyleDecoder,
    "SwapForge_FaceSwap": SwapForgeFaceSwap,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SwapForge_StyleSwapLoader": "StyleSwap Loader (SwapForge)",
    "SwapForge_PSPEncoderLoader": "pSp/e4e Encoder Loader (SwapForge)",
    "SwapForge_StyleGAN2Loader": "StyleGAN2 Loader (SwapForge)",
    "SwapForge_StyleEncoder": "Style Encoder (SwapForge)",
    "SwapForge_StyleBlend": "Style Blend (SwapForge)",
    "SwapForge_StyleDecoder": "Style Decoder (SwapForge)",
    "SwapForge_FaceSwap": "Face Swap: StyleSwap (SwapForge)",
}
