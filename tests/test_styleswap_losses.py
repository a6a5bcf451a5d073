"""StyleSwap training losses, discriminator, ArcFace layout and differentiable landmarks, against hand
computations (arXiv 2312.10843, Sec. 3.3)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from models.styleswap import losses
from models.styleswap.arcface import (ArcFaceIRSE50, IdentityModel, TinyIdentityNet, arcface_key_shapes,
                                      crop_and_pool, load_arcface)
from models.styleswap.discriminator import MultiScaleDiscriminator
from models.styleswap.landmarks import HeatmapLandmarks, LandmarkModel, load_landmarks, soft_argmax


# ---------------------------------------------------------------------- fixed tiny models
class MeanColourId(IdentityModel):
    """Embedding = normalised (mean R, mean G, mean B, 1) of the image: simple enough to recompute by hand."""

    def embed(self, img):
        m = img.mean(dim=(2, 3))
        e = torch.cat([m, torch.ones_like(m[:, :1])], 1)
        return e / e.norm(dim=1, keepdim=True)


def np_embed(img):
    m = img.mean(axis=(2, 3))
    e = np.concatenate([m, np.ones((len(m), 1))], 1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


class BrightnessLandmarks(LandmarkModel):
    """19 fixed points shifted right by 10 * mean brightness (pixels): differentiable and hand-computable."""

    def __init__(self):
        super().__init__()
        self.register_buffer("base", torch.stack([torch.arange(19.0), 2 * torch.arange(19.0)], 1))

    def forward(self, img):
        shift = 10 * img.mean(dim=(1, 2, 3))
        return self.base[None] + torch.stack([shift, torch.zeros_like(shift)], 1)[:, None, :]


def rand_images(seed, b=3, s=16):
    """Noise around a random colour per item (so the colour embeddings differ clearly), in -1..1."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(b, 3, 1, 1, generator=g) * 1.4 - 0.7
    return colour + torch.rand(b, 3, s, s, generator=g) * 0.6 - 0.3


# ---------------------------------------------------------------------- paper weights and curriculum
def test_loss_weights_are_the_papers():
    assert losses.LOSS_WEIGHTS == dict(id=10, con=5, rec=1, lm=100, swap=1, adv=1)
    assert losses.TAU == 0.07


def test_same_identity_probability_is_linear_from_one_to_zero_and_then_stays_zero():
    p = losses.same_identity_probability
    assert p(0, 100) == 1.0
    assert p(25, 100) == pytest.approx(0.75)
    assert p(50, 100) == pytest.approx(0.5)
    assert p(100, 100) == 0.0
    assert p(250, 100) == 0.0
    assert p(50, 100, start=1.0, end=0.5) == pytest.approx(0.75)


# ---------------------------------------------------------------------- adversarial
def test_hinge_losses_on_hand_logits_average_over_scales():
    real = [torch.tensor([[2.0, 0.5], [-1.0, 1.0]]), torch.tensor([0.0, 3.0])]
    fake = [torch.tensor([[-2.0, -0.5], [1.0, 0.0]]), torch.tensor([-1.5, 0.2])]
    # scale 1: relu(1 - real) = 0, .5, 2, 0 -> mean .625; relu(1 + fake) = 0, .5, 2, 1 -> .875
    # scale 2: relu(1 - real) = 1, 0 -> .5; relu(1 + fake) = 0, 1.2 -> .6
    d = (0.625 + 0.875 + 0.5 + 0.6) / 2
    assert float(losses.hinge_d(real, fake)) == pytest.approx(d)
    # -mean(fake): scale 1 -> -(-1.5/4) = .375; scale 2 -> -(-1.3/2) = .65
    assert float(losses.hinge_g(fake)) == pytest.approx((0.375 + 0.65) / 2)
    assert float(losses.hinge_d(real[0], fake[0])) == pytest.approx(0.625 + 0.875)


def test_multiscale_discriminator_gives_one_patch_map_per_halved_scale():
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(num_scales=3, base_channels=8, n_layers=4, size=64)
    maps = d(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert len(maps) == 3
    # padding 2, k 4: stride 2 -> h/2 + 1, stride 1 -> h + 1; layers s2, s2, s2, s1, final s1
    def out_size(h):
        for stride in (2, 2, 2, 1, 1):
            h = (h + 4 - 4) // stride + 1
        return h
    for k, m in enumerate(maps):
        assert m.shape == (2, 1, out_size(64 // 2 ** k), out_size(64 // 2 ** k))
    with pytest.raises(ValueError, match="64, 64"):
        d(torch.zeros(1, 3, 32, 32))


# ---------------------------------------------------------------------- identity terms
def test_identity_loss_is_one_minus_cosine_of_embeddings_averaged_over_batch():
    out, src = rand_images(1), rand_images(2)
    expected = np.mean(1 - (np_embed(out.numpy()) * np_embed(src.numpy())).sum(1))
    got = losses.identity_loss(MeanColourId(), out, src)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_identity_loss_gradient_reaches_the_output_only():
    out, src = rand_images(1).requires_grad_(True), rand_images(2).requires_grad_(True)
    losses.identity_loss(MeanColourId(), out, src).backward()
    assert out.grad.abs().sum() > 0 and src.grad is None


def test_infonce_is_eq9_positive_only_in_the_numerator_with_masked_negatives():
    out, src = rand_images(3), rand_images(4)
    negs = torch.stack([rand_images(5), rand_images(6)], 1)  # [B=3, K=2, 3, 16, 16]
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    tau = 0.07
    eo, es = np_embed(out.numpy()), np_embed(src.numpy())
    en = np_embed(negs.numpy().reshape(6, 3, 16, 16)).reshape(3, 2, -1)
    expected = []   # eq. 9: -log(exp(S_p) / (exp(S_t) + sum exp(S_n))); item 2 has no negative: no term
    for i in range(2):
        pos = eo[i] @ es[i] / tau
        negatives = [eo[i] @ en[i, k] / tau for k in range(2) if mask[i, k]]
        expected.append(-(pos - math.log(sum(math.exp(v) for v in negatives))))
    got = losses.infonce_loss(MeanColourId(), out, src, negs, tau=tau, negative_mask=mask)
    assert float(got) == pytest.approx(np.mean(expected), rel=1e-4)
    full = np.mean([-(eo[i] @ es[i] / tau - math.log(sum(math.exp(eo[i] @ en[i, k] / tau) for k in range(2))))
                    for i in range(3)])
    assert float(losses.infonce_loss(MeanColourId(), out, src, negs, tau=tau)) == pytest.approx(full, rel=1e-4)
    # the standard InfoNCE (positive also in the denominator) stays available as an option
    std = np.mean([-(eo[i] @ es[i] / tau - math.log(math.exp(eo[i] @ es[i] / tau) +
                                                     sum(math.exp(eo[i] @ en[i, k] / tau) for k in range(2))))
                   for i in range(3)])
    e_neg = torch.from_numpy(en)
    opt = losses.infonce_from_embeddings(torch.from_numpy(eo), torch.from_numpy(es), e_neg, tau, include_positive=True)
    assert float(opt) == pytest.approx(std, rel=1e-4)
    none = losses.infonce_from_embeddings(torch.from_numpy(eo).requires_grad_(True), torch.from_numpy(es), e_neg,
                                          tau, torch.zeros(3, 2, dtype=torch.bool))
    assert float(none.detach()) == 0.0


# ---------------------------------------------------------------------- pixel and landmark terms
def test_reconstruction_uses_only_same_identity_items_with_half_mean_squared_error():
    out, tgt = rand_images(7, b=4), rand_images(8, b=4)
    same = torch.tensor([True, False, True, False])
    o, t = out.numpy(), tgt.numpy()
    expected = 0.5 * np.mean([np.mean((o[i] - t[i]) ** 2) for i in (0, 2)])
    assert float(losses.reconstruction_loss(out, tgt, same)) == pytest.approx(expected, rel=1e-5)
    changed = out.clone()
    changed[[1, 3]] += 5.0  # cross-identity items do not count
    assert float(losses.reconstruction_loss(changed, tgt, same)) == pytest.approx(expected, rel=1e-5)
    none = losses.reconstruction_loss(out.requires_grad_(True), tgt, torch.zeros(4, dtype=torch.bool))
    assert float(none.detach()) == 0.0
    none.backward()  # still part of the graph


def test_landmark_loss_is_half_mean_squared_difference_of_size_normalised_points():
    out, tgt = rand_images(9, s=20), rand_images(10, s=20)
    so = 10 * out.numpy().mean(axis=(1, 2, 3))
    st = 10 * tgt.numpy().mean(axis=(1, 2, 3))
    # only x differs: (st - so) / 20 for all 19 points; y identical -> mean over 38 coords halves it
    expected = 0.5 * np.mean(((st - so) / 20) ** 2 / 2)
    got = losses.landmark_loss(BrightnessLandmarks(), out, tgt)
    assert float(got) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------- dual swap consistency
def test_dual_swap_consistency_with_averaging_toy_generator_by_hand():
    s, t = rand_images(11), rand_images(12)
    G = lambda a, b: 0.5 * a + 0.5 * b
    # out = (s+t)/2; G(out, s) - s = (t - s)/4; G(t, out) - t = (s - t)/4
    d2 = ((t - s).numpy() / 4) ** 2
    total, parts = losses.dual_swap_consistency(G, s, t)
    assert float(parts["swap_s"]) == pytest.approx(0.5 * d2.mean(), rel=1e-5)
    assert float(parts["swap_t"]) == pytest.approx(0.5 * d2.mean(), rel=1e-5)
    assert float(total) == pytest.approx(d2.mean(), rel=1e-5)


def test_dual_swap_consistency_follows_source_identity_target_attributes_convention():
    """Images as (identity channel, attribute channel): an ideal G(source, target) = (source identity,
    target attributes) reconstructs both Is and It exactly; an asymmetric G checks each term's arguments."""
    s = torch.tensor([[[[1.0]], [[2.0]]]])  # identity 1, attributes 2
    t = torch.tensor([[[[3.0]], [[4.0]]]])
    ideal = lambda a, b: torch.cat([a[:, :1], b[:, 1:]], 1)
    total, _ = losses.dual_swap_consistency(ideal, s, t)
    assert float(total) == 0.0
    # an asymmetric G pins down which argument goes where in each term
    skew = lambda a, b: torch.cat([0.9 * a[:, :1] + 0.1 * b[:, :1], b[:, 1:]], 1)
    s_out = skew(s, t)  # (1.2, 4)
    back_s = skew(s_out, s)  # (0.9*1.2 + 0.1*1, 2) = (1.18, 2)
    back_t = skew(t, s_out)  # (0.9*3 + 0.1*1.2, 4) = (2.82, 4)
    expected = 0.5 * ((1.18 - 1) ** 2 + 0) / 2 + 0.5 * ((2.82 - 3) ** 2 + 0) / 2
    total, _ = losses.dual_swap_consistency(skew, s, t)
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_dual_swap_consistency_accepts_tuple_outputs_and_reuses_given_out():
    s, t = rand_images(13), rand_images(14)
    calls = []

    def G(a, b):
        calls.append(1)
        return 0.5 * a + 0.5 * b, None

    out = G(s, t)[0]
    calls.clear()
    total, _ = losses.dual_swap_consistency(G, s, t, out)
    assert len(calls) == 2
    d2 = ((t - s).numpy() / 4) ** 2
    assert float(total) == pytest.approx(d2.mean(), rel=1e-5)


def test_generator_loss_is_the_weighted_sum_of_its_terms():
    s, t = rand_images(15, b=2), rand_images(16, b=2)
    out = (0.3 * s + 0.7 * t).requires_grad_(True)
    same = torch.tensor([True, False])
    id_model = MeanColourId()
    e_neg = id_model.embed(torch.cat([s, t]))
    mask = torch.tensor([[False, True, True, True], [True, False, True, True]])
    G = lambda a, b: 0.5 * a + 0.5 * b
    fake = [torch.tensor([0.5, -1.0])]
    total, terms = losses.generator_loss(out=out, source=s, target=t, same_mask=same, fake_logits=fake,
                                         id_model=id_model, lm_model=BrightnessLandmarks(), G=G, e_neg=e_neg,
                                         negative_mask=mask)
    assert set(terms) == {"adv", "id", "con", "rec", "lm", "swap"}
    assert float(terms["adv"].detach()) == pytest.approx(0.25)
    with torch.no_grad():
        assert float(terms["id"]) == pytest.approx(float(losses.identity_loss(id_model, out, s)), rel=1e-6)
        assert float(terms["rec"]) == pytest.approx(float(losses.reconstruction_loss(out, t, same)), rel=1e-6)
    w = dict(adv=1, id=10, con=5, rec=1, lm=100, swap=1)
    assert float(total.detach()) == pytest.approx(sum(w[k] * float(v.detach()) for k, v in terms.items()), rel=1e-6)
    total.backward()
    assert out.grad is not None
    _, only = losses.generator_loss(out=out, source=s, target=t, same_mask=same, weights=dict(rec=0.0))
    assert only == {}


# ---------------------------------------------------------------------- landmarks
def test_soft_argmax_of_a_delta_heatmap_is_its_pixel():
    hm = torch.zeros(1, 2, 9, 12)
    hm[0, 0, 4, 7] = 100.0  # (x, y) = (7, 4)
    hm[0, 1, 0, 11] = 100.0  # (11, 0)
    pts = soft_argmax(hm)
    assert torch.allclose(pts, torch.tensor([[[7.0, 4.0], [11.0, 0.0]]]), atol=1e-4)
    flat = soft_argmax(torch.zeros(1, 1, 3, 5))  # uniform -> the centre of the pixel-centre grid
    assert torch.allclose(flat, torch.tensor([[[2.0, 1.0]]]), atol=1e-6)


def test_heatmap_landmarks_map_heatmap_pixels_to_input_pixels_and_are_differentiable():
    torch.manual_seed(0)
    m = HeatmapLandmarks(n_points=19, channels=8, depth=1)

    class Peak(nn.Module):  # replace the head: a delta at heatmap pixel (x=3, y=5) for every point
        def forward(self, x):
            hm = torch.zeros(x.shape[0], 19, x.shape[2], x.shape[3])
            hm[:, :, 5, 3] = 1000.0
            return hm + 0 * x.sum()

    img = torch.rand(2, 3, 64, 64, requires_grad=True)
    assert m(img).shape == (2, 19, 2)
    m(img).sum().backward()
    assert img.grad.abs().sum() > 0
    m.head = Peak()
    pts = m(img.detach())
    # stride 4: heatmap pixel 3 covers input pixels 12..15, centre 13.5; pixel 5 -> 21.5
    assert torch.allclose(pts, torch.tensor([13.5, 21.5]).expand(2, 19, 2), atol=1e-3)


def test_landmark_weights_round_trip_through_a_state_dict():
    torch.manual_seed(1)
    m = HeatmapLandmarks(channels=8, depth=2)
    img = torch.rand(1, 3, 32, 32)
    loaded = load_landmarks(m.state_dict())
    assert torch.equal(loaded(img), m.eval()(img))
    assert loaded.config == m.config
    with pytest.raises(FileNotFoundError, match="landmark"):
        load_landmarks("/nonexistent/lm.pt")


# ---------------------------------------------------------------------- ArcFace
# Written out from pSp's models/encoders/model_irse.py (Backbone(112, 50, mode='ir_se')) and helpers.py.
PSP_IR_SE50_KEYS = {
    "input_layer.0.weight": (64, 3, 3, 3),
    "input_layer.1.weight": (64,), "input_layer.1.running_var": (64,),
    "input_layer.2.weight": (64,),
    "body.0.res_layer.0.weight": (64,),
    "body.0.res_layer.1.weight": (64, 64, 3, 3),
    "body.0.res_layer.2.weight": (64,),
    "body.0.res_layer.3.weight": (64, 64, 3, 3),
    "body.0.res_layer.4.running_mean": (64,),
    "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),
    "body.0.res_layer.5.fc2.weight": (64, 4, 1, 1),
    "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
    "body.3.shortcut_layer.1.bias": (128,),
    "body.3.res_layer.1.weight": (128, 64, 3, 3),
    "body.7.shortcut_layer.0.weight": (256, 128, 1, 1),
    "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
    "body.23.res_layer.5.fc2.weight": (512, 32, 1, 1),
    "output_layer.0.weight": (512,), "output_layer.0.running_var": (512,),
    "output_layer.3.weight": (512, 512 * 7 * 7), "output_layer.3.bias": (512,),
    "output_layer.4.running_mean": (512,), "output_layer.4.running_var": (512,),
}
PSP_ABSENT = ("body.0.shortcut_layer.0.weight", "body.24.res_layer.1.weight", "output_layer.4.weight",
              "output_layer.4.bias", "output_layer.1.weight", "output_layer.2.weight")


def test_arcface_state_dict_has_psp_model_ir_se50_key_names_and_shapes():
    shapes = dict(arcface_key_shapes())
    for k, shape in PSP_IR_SE50_KEYS.items():
        assert shapes.get(k) == shape, k
    for k in PSP_ABSENT:
        assert k not in shapes, k
    # 24 units; SE convs have no bias; BN1d without affine
    assert max(int(k.split(".")[1]) for k in shapes if k.startswith("body.")) == 23
    assert not any(k.endswith("fc1.bias") for k in shapes)


def test_arcface_crop_is_psps_box_pooled_to_112():
    img = torch.zeros(1, 3, 256, 256)
    img[:, :, 35:223, 32:220] = 1.0
    x = crop_and_pool(img)
    assert x.shape == (1, 3, 112, 112) and torch.all(x == 1.0)
    x = crop_and_pool(1.0 - img)
    assert torch.all(x == 0.0)
    big = torch.zeros(1, 3, 512, 512)
    big[:, :, 70:446, 64:440] = 1.0  # the same box at twice the size
    assert torch.all(crop_and_pool(big) == 1.0) and torch.all(crop_and_pool(1.0 - big) == 0.0)


def test_load_arcface_is_strict_and_explains_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_arcface(str(tmp_path / "model_ir_se50.pth"))
    msg = str(e.value)
    assert "model_ir_se50.pth" in msg and "models/swapforge/arcface" in msg and "MIT" in msg
    torch.manual_seed(0)
    small = ArcFaceIRSE50(channels=16)
    state = {k: v for k, v in small.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "small.pth")
    loaded = load_arcface(str(tmp_path / "small.pth"))
    img = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        e1, e2 = loaded.embed(img), small.eval().embed(img)
    assert torch.allclose(e1, e2) and torch.allclose(e1.norm(dim=1), torch.ones(1))
    del state["output_layer.3.bias"]
    with pytest.raises(ValueError, match="output_layer.3.bias"):
        load_arcface(state)


def test_tiny_identity_net_gives_unit_embeddings():
    torch.manual_seed(0)
    e = TinyIdentityNet().embed(torch.rand(3, 3, 64, 64))
    assert e.shape == (3, 64) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-6)
