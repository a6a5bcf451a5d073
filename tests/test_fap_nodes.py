"""The FuseAnyPart nodes as ComfyUI calls them, with stand-ins for ComfyUI's CLIP_VISION, MODEL and VAE
(wiring: which inputs reach the encoder, which patches reach the model, what the conditioning carries).
The maths of each stage is proven in test_fap_fusion/injection/clip_inputs; the real-ComfyUI run with
full-size random weights is tests/e2e/test_fap_workflow.py."""
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.face.records import PartBoxes, PartSet
from models.fuseanypart import clip_inputs
from models.fuseanypart.injection import SD15_ATTN2_LAYERS, addition_injection
from packloader import load_pack
from test_fap_checkpoints import CLIP_D, _fake_fap_state

pack = load_pack()
N = pack.NODE_CLASS_MAPPINGS
fap_nodes = sys.modules["swapforge.nodes.fuseanypart"]
pipeline = sys.modules["swapforge.models.fuseanypart.pipeline"]

BOXES = PartBoxes(eyes=[0.30, 0.20, 0.45, 0.80], nose=[0.45, 0.35, 0.62, 0.65], mouth=[0.62, 0.30, 0.78, 0.70])


def partset(n=1, boxes=BOXES):
    return PartSet(frames=[[boxes] for _ in range(n)], frame_size=(64, 64))


class FakeClipVision:
    """Penultimate tokens: token 1 + r*16 + c holds the mean colour of patch (r, c) of the 224 px input (first
    3 dims) and a tag of the call; CLS is the image mean. Records every input. Like ComfyUI's ClipVisionModel it
    has an inner `model` called on normalised pixel values (what the exact zero input goes through)."""

    def __init__(self, width=CLIP_D):
        self.width, self.calls, self.pixel_calls = width, [], []
        self.image_size = 224

    def _tokens(self, x):
        patches = F.avg_pool2d(x, 14).flatten(2).transpose(1, 2)             # [B, 256, 3]
        tok = torch.zeros(x.shape[0], 257, self.width)
        tok[:, 1:, :3] = patches
        tok[:, 0, :3] = x.mean((2, 3))
        tok[:, :, 3] = len(self.calls) + len(self.pixel_calls)
        return tok

    def encode_image(self, image):
        self.calls.append(image.clone())
        return SimpleNamespace(penultimate_hidden_states=self._tokens(
            F.interpolate(image.permute(0, 3, 1, 2), size=(224, 224), mode="nearest")))

    def model(self, pixel_values, intermediate_output=-2):
        assert intermediate_output == -2
        self.pixel_calls.append(pixel_values.clone())
        return None, self._tokens(pixel_values), None


def img(color, n=1, size=64):
    return torch.ones(n, size, size, 3) * torch.tensor(color)


def encode(clip=None, target=None, **kw):
    clip = clip or FakeClipVision()
    target = img([0.2, 0.4, 0.6]) if target is None else target
    feats = N["SwapForge_CLIPPartEncoder"]().encode(
        clip, target, partset(len(target)), eyes_image=img([1.0, 0.0, 0.0]), eyes_parts=partset(),
        mouth_image=img([0.0, 0.0, 1.0]), mouth_parts=partset(), **kw)[0]
    return clip, feats


def _pil_256(x):
    """The authors' step, computed here with PIL directly: 8-bit image -> 256 x 256 bicubic."""
    from PIL import Image

    u8 = (x[0].numpy() * 255).round().astype(np.uint8)
    return torch.from_numpy(np.array(Image.fromarray(u8).resize((256, 256), Image.BICUBIC))).float()[None] / 255


def test_encoder_paints_only_the_referenced_parts_resizes_like_the_authors_and_encodes_an_exact_zero():
    clip, feats = encode()
    target_in, eyes_in, mouth_in = clip.calls                      # no 0..1 image for the unconditional branch
    painted = clip_inputs.boxes_mask([BOXES.as_dict()], (64, 64), parts=("eyes", "mouth"))[0] > 0.5
    skin = torch.tensor(clip_inputs.SKIN_RGB) / 255.0
    filled = torch.where(painted[..., None], skin, torch.tensor([0.2, 0.4, 0.6]))[None]   # nose has no reference
    assert target_in.shape == (1, 256, 256, 3) and torch.equal(target_in, _pil_256(filled))
    eyes_box = clip_inputs.pixel_box_mask(BOXES.eyes, (64, 64))
    eyes_ref = torch.where(eyes_box[..., None], torch.tensor([1.0, 0, 0]), torch.zeros(3))[None]
    assert torch.equal(eyes_in, _pil_256(eyes_ref))
    (zero_in,) = clip.pixel_calls
    assert zero_in.shape == (1, 3, 224, 224) and float(zero_in.abs().max()) == 0.0    # zero after normalisation
    assert set(feats.sources) == {"eyes", "mouth"} and feats.painted == ("eyes", "mouth")
    assert feats.target_tokens.shape == (1, 257, CLIP_D) and feats.uncond[0, 0, 3] == 4
    std, _ = encode(clip_resize="standard (224)")
    assert torch.equal(std.calls[0], filled)                       # straight to CLIP's own 224 px step


def test_fusion_node_takes_each_part_from_its_own_reference_and_keeps_switched_off_parts():
    clip, feats = encode()
    cond = N["SwapForge_MaskFusion"]().fuse(feats, True, True, True)[0]
    grid = cond.fused[0, 1:].reshape(16, 16, CLIP_D)
    r0, c0 = int(BOXES.eyes[0] * 16), int(BOXES.eyes[1] * 16)
    m0, mc0 = int(BOXES.mouth[0] * 16), int(BOXES.mouth[1] * 16)
    assert grid[r0 + 1, c0 + 1, 3] == 2 and grid[m0 + 1, mc0 + 1, 3] == 3   # tags of the eyes / mouth calls
    assert grid[0, 0, 3] == 1 and torch.equal(cond.fused[0, 0], feats.target_tokens[0, 0])  # rest: target, CLS kept
    assert cond.parts == ("eyes", "mouth") and len(clip.calls) == 3
    off = N["SwapForge_MaskFusion"]().fuse(feats, False, True, True)[0]
    # the eyes are kept: the target is encoded again with only the mouth painted, and its eyes cells are used
    assert len(clip.calls) == 4 and off.parts == ("mouth",)
    mouth_only = clip_inputs.boxes_mask([BOXES.as_dict()], (64, 64), parts=("mouth",))[0] > 0.5
    skin = torch.tensor(clip_inputs.SKIN_RGB) / 255.0
    expect = torch.where(mouth_only[..., None], skin, torch.tensor([0.2, 0.4, 0.6]))[None]
    assert torch.equal(clip.calls[3], _pil_256(expect))
    eyes_cell = off.fused[0, 1:].reshape(16, 16, CLIP_D)[r0 + 1, c0 + 1]
    assert eyes_cell[3] == 5 and torch.allclose(eyes_cell[:3], torch.tensor([0.2, 0.4, 0.6]), atol=0.01)
    N["SwapForge_MaskFusion"]().fuse(feats, False, True, True)
    assert len(clip.calls) == 4                                    # that encoding is kept


class FakeModel:
    def __init__(self):
        self.patches = {}

    def clone(self):
        m = FakeModel()
        m.patches = dict(self.patches)
        return m

    def set_model_attn2_replace(self, patch, block, number, index):
        self.patches[(block, number, index)] = patch

    def get_model_object(self, name):
        assert name == "model_sampling"
        return SimpleNamespace(percent_to_sigma=lambda p: 14.6 * (1 - p) + 0.03 * p)


def adapter():
    unet_sd, mlp_sd, proj_sd, width = pipeline.checkpoints.split_fap_state(_fake_fap_state())
    mlp, projectors = pipeline.checkpoints.build_adapter(mlp_sd, proj_sd)
    return pipeline.FapAdapter(mlp, projectors, width)


def test_injector_patches_all_16_layers_of_a_clone_and_routes_cond_and_uncond_rows():
    _, feats = encode()
    cond = N["SwapForge_MaskFusion"]().fuse(feats, True, True, True)[0]
    base, ad = FakeModel(), adapter()
    out = N["SwapForge_AdditionInjector"]().patch(base, ad, cond, 0.7, 0.0, 1.0)[0]
    assert base.patches == {} and out is not base
    assert set(out.patches) == {layer.comfy_key for layer in SD15_ATTN2_LAYERS}
    layer = SD15_ATTN2_LAYERS[0]
    w = layer.width
    q = torch.zeros(2, 32 * 32, w)
    res = out.patches[layer.comfy_key](q, q, q, {"cond_or_uncond": [1, 0], "n_heads": 1})
    with torch.no_grad():
        c = ad.mlp(cond.fused[:, 1:].float())
        u = ad.mlp(cond.uncond[:, 1:].float())
        exp_c = addition_injection(c, ad.projectors[layer.comfy_key], 32 * 32, 0.7)
        exp_u = addition_injection(u, ad.projectors[layer.comfy_key], 32 * 32, 0.7)
    torch.testing.assert_close(res[0], exp_u[0])
    torch.testing.assert_close(res[1], exp_c[0])


def test_injector_refuses_a_clip_of_another_width_naming_both():
    clip, feats = encode(FakeClipVision(width=16))
    cond = N["SwapForge_MaskFusion"]().fuse(feats, True, True, True)[0]
    with pytest.raises(ValueError, match="12.*16|16.*12"):
        N["SwapForge_AdditionInjector"]().patch(FakeModel(), adapter(), cond, 1.0, 0.0, 1.0)


def test_injector_outside_its_percent_range_is_plain_attention():
    _, feats = encode()
    cond = N["SwapForge_MaskFusion"]().fuse(feats, True, True, True)[0]
    out = N["SwapForge_AdditionInjector"]().patch(FakeModel(), adapter(), cond, 1.0, 0.5, 1.0)[0]
    layer = SD15_ATTN2_LAYERS[0]
    q = torch.randn(1, 64, layer.width)
    k = v = torch.randn(1, 77, layer.width)
    late = out.patches[layer.comfy_key](q, k, v, {"cond_or_uncond": [0], "n_heads": 1, "sigmas": torch.tensor([14.0])})
    ref = torch.softmax(q @ k.transpose(1, 2) / layer.width ** 0.5, -1) @ v
    torch.testing.assert_close(late, ref, rtol=1e-4, atol=1e-5)


class FakeVAE:
    def encode(self, pixels):
        x = F.avg_pool2d(pixels.permute(0, 3, 1, 2), 8)
        return torch.cat([x, x.mean(1, keepdim=True)], 1)


def test_conditioning_carries_the_masked_reference_latent_with_seeded_noise_in_the_boxes():
    target = img([0.2, 0.4, 0.6])
    pos, neg, latent, swap_mask = N["SwapForge_FuseAnyPartConditioning"]().encode(FakeVAE(), target, partset(), 7)
    extra = pos[0][1]
    concat, mask = extra["concat_latent_image"], extra["concat_mask"]
    assert mask.shape == (1, 1, 8, 8) and latent["samples"].shape == (1, 4, 8, 8)
    assert float(latent["samples"].abs().max()) == 0.0 and pos[0][0].shape == (1, 77, 768)
    full = clip_inputs.boxes_mask([BOXES.as_dict()], (64, 64))[:, None]
    assert torch.equal(mask, F.interpolate(full, size=(8, 8), mode="nearest"))
    skin_latent = FakeVAE().encode(clip_inputs.skin_fill_target(target, [BOXES.as_dict()]))
    out = mask[0, 0] == 0
    torch.testing.assert_close(concat[0][:, out], skin_latent[0][:, out])
    inside = concat[0][:, ~out] * pipeline.SD15_LATENT_SCALE       # N(0, 1) once ComfyUI scales it
    assert abs(float(inside.mean())) < 0.5 and 0.5 < float(inside.std()) < 1.5
    again = N["SwapForge_FuseAnyPartConditioning"]().encode(FakeVAE(), target, partset(), 7)[0][0][1]
    assert torch.equal(again["concat_latent_image"], concat)
    assert torch.equal(neg[0][1]["concat_latent_image"], concat)
    assert torch.equal(swap_mask, full[:, 0])          # without a fap_cond: all three parts (the authors' swap)


def test_a_kept_part_is_neither_painted_nor_inpainted_and_stays_out_of_the_paste_mask():
    target = img([0.2, 0.4, 0.6])
    _, feats = encode()
    cond = N["SwapForge_MaskFusion"]().fuse(feats, False, True, True)[0]            # eyes kept: mouth only
    vae = FakeVAE()
    seen = []
    vae.encode = lambda pixels, enc=vae.encode: (seen.append(pixels.clone()), enc(pixels))[1]
    pos, _, _, swap_mask = N["SwapForge_FuseAnyPartConditioning"]().encode(vae, target, partset(), 7, fap_cond=cond)
    mouth = clip_inputs.boxes_mask([BOXES.as_dict()], (64, 64), parts=("mouth",))
    assert torch.equal(swap_mask, mouth)                                            # only the mouth box
    assert torch.equal(seen[0], clip_inputs.skin_fill_target(target, [BOXES.as_dict()], parts=("mouth",)))
    assert torch.equal(pos[0][1]["concat_mask"], F.interpolate(mouth[:, None], size=(8, 8), mode="nearest"))
    # Paste Back through that mask gives the kept eyes (and everything else outside the mouth) back unchanged
    from models.face import paste
    from models.face.records import Crop, CropSet

    frame = np.random.default_rng(0).random((1, 64, 64, 3)).astype(np.float32)
    crops = np.random.default_rng(1).random((1, 64, 64, 3)).astype(np.float32)     # "the decoded result"
    info = CropSet([Crop(0, 0, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 64)], (64, 64), 1)
    out, used = paste.paste_back(frame, crops, info, swap_mask.numpy(), 0, 4)
    eyes = clip_inputs.pixel_box_mask(BOXES.eyes, (64, 64)).numpy()
    assert np.array_equal(out[0][eyes], frame[0][eyes]) and used[0][eyes].max() == 0.0
    assert not np.array_equal(out[0][mouth[0].numpy() > 0], frame[0][mouth[0].numpy() > 0])


def test_noise_node_gives_seeded_noise_scaled_like_the_authors():
    noise = N["SwapForge_FuseAnyPartNoise"]().make(42, 0.18215)[0]
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    expect = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(42)) * 0.18215
    assert torch.equal(noise.generate_noise(latent), expect) and noise.seed == 42
    std = N["SwapForge_FuseAnyPartNoise"]().make(42, 1.0)[0].generate_noise(latent)
    assert torch.equal(std, torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(42)))
    g = torch.Generator().manual_seed(3)
    n0, n1 = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    picked = N["SwapForge_FuseAnyPartNoise"]().make(3, 1.0)[0].generate_noise({**latent, "batch_index": [1, 0]})
    assert torch.equal(picked, torch.cat([n1, n0]))                # ComfyUI's batch_index rule


def test_bad_inputs_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="square"):
        N["SwapForge_FuseAnyPartConditioning"]().encode(FakeVAE(), torch.zeros(1, 64, 96, 3), partset(), 0)
    with pytest.raises(ValueError, match="square target"):
        N["SwapForge_CLIPPartEncoder"]().encode(FakeClipVision(), torch.zeros(1, 64, 48, 3), partset())
    with pytest.raises(ValueError, match="no face 0 in frame"):
        N["SwapForge_CLIPPartEncoder"]().encode(FakeClipVision(), img([0, 0, 0], 2),
                                                PartSet(frames=[[BOXES], []], frame_size=(64, 64)))
    with pytest.raises(ValueError, match="both eyes_image and eyes_parts"):
        N["SwapForge_CLIPPartEncoder"]().encode(FakeClipVision(), img([0, 0, 0]), partset(), eyes_image=img([1, 0, 0]))
    monkeypatch.setenv("SWAPFORGE_MODELS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="fuseanypart.*Thomas-Tom/FuseAnyPart"):
        N["SwapForge_FuseAnyPartLoader"]().load("fap.bin")


def test_loader_reads_fap_bin_into_a_comfy_ordered_unet_and_an_adapter(tmp_path):
    state = _fake_fap_state()
    path = tmp_path / "fap.bin"
    torch.save(state, path)
    unet_sd, ad = pipeline.load_fap(str(path))
    assert ad.clip_width == CLIP_D and not any("image_projector" in k for k in unet_sd)
    w = state["unet"]["conv_in.weight"]
    assert torch.equal(unet_sd["conv_in.weight"], torch.cat([w[:, :4], w[:, 8:9], w[:, 4:8]], 1))
