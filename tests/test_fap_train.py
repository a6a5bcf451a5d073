"""FuseAnyPart trainer: conditioning dropout, gradient path, loss on real photos, export reload, resume."""
from __future__ import annotations

import os
import shutil
import time
from collections import Counter

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")
pytest.importorskip("dlib")

from models.fuseanypart import checkpoints  # noqa: E402
from models.fuseanypart.injection import SD15_ATTN2_NAMES  # noqa: E402
from models.fuseanypart.train import DROP_CASES, IMAGES, FapTrainer, TrainConfig, sample_dropout  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def test_conditioning_dropout_cases_and_frequencies():
    g = torch.Generator().manual_seed(0)
    n = 40000
    drops = sample_dropout(n, g)
    sets = Counter(frozenset(IMAGES[j] for j in range(4) if row[j]) for row in drops.tolist())
    allowed = set(DROP_CASES) | {frozenset()}
    assert set(sets) <= allowed
    assert set(DROP_CASES) == {frozenset(IMAGES), frozenset({"eyes", "nose", "mouth"}), frozenset({"nose", "mouth"}),
                               frozenset({"eyes", "mouth"}), frozenset({"eyes", "nose"})}
    for case in DROP_CASES:
        assert abs(sets[case] / n - 0.04) < 0.006, (sorted(case), sets[case] / n)
    for part in ("eyes", "nose", "mouth"):                   # a single part is never dropped alone
        assert sets[frozenset({part})] == 0
    assert abs(sets[frozenset()] / n - 0.8) < 0.01


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from models.fuseanypart.dataset import FacePartsDataset

    root = tmp_path_factory.mktemp("faces")
    groups = {"obama": ["obama.jpg", "obama2.jpg", "obama3.jpg"], "biden": ["biden.jpg"],
              "hopper": ["grace_hopper.jpg"], "astronaut": ["astronaut.jpg"]}
    for ident, files in groups.items():
        os.makedirs(root / ident)
        for f in files:
            shutil.copy(os.path.join(DATA, f), root / ident / f)
    ds = FacePartsDataset(str(root), size=64)
    assert len(ds) == 6 and not ds.skipped
    obama = ds.identities.index("obama")
    for i in ds.members[obama]:                              # references: a DIFFERENT photo of the same person
        item = ds[i]
        assert all(r != i and r in ds.members[obama] for r in item["ref_index"].values())
    single = ds.members[ds.identities.index("biden")][0]
    assert set(ds[single]["ref_index"].values()) == {single}
    return ds


def _cfg(**kw):
    base = dict(tiny=True, size=64, batch=2, lr=1e-3, seed=0, timesteps=[100, 300, 500, 700, 900], save_every=0)
    base.update(kw)
    return TrainConfig(**base)


def test_step_gradients_reach_adapter_not_frozen_unet_and_loss_is_eq5(dataset):
    tr = FapTrainer(_cfg(), dataset)
    core = tr.core
    inp = tr.prepare_inputs(tr.next_batch())
    # authors' UNet input order: noisy latent (4), masked reference latent (4), mask (1)
    assert inp["unet_in"].shape[1] == 9
    torch.testing.assert_close(inp["unet_in"][:, 8:9], inp["mask"])
    torch.testing.assert_close(inp["unet_in"][:, 4:8], inp["masked"])
    pred = tr.model(inp["fused"], inp["unet_in"], inp["t"])
    loss = torch.nn.functional.mse_loss(pred, inp["noise"])
    loss.backward()
    ref = ((pred.detach().double() - inp["noise"].double()) ** 2).mean()      # eq. 5, recomputed
    assert abs(float(loss.detach()) - float(ref)) < 1e-6
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in core.mlp.parameters())
    assert all(lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0 for lin in core.projectors.layers)
    frozen = [(n, p) for n, p in core.unet.named_parameters() if not n.startswith("conv_in.")]
    assert all(p.grad is None and not p.requires_grad for _, p in frozen)    # the UNet is frozen but conv_in
    assert core.unet.conv_in.weight.grad.abs().sum() > 0


def _tiny_base(root, in_channels, seed=7):
    """A tiny diffusers UNet saved as a --base-unet folder (SD1.5's block layout, 4 or 9 input channels)."""
    from diffusers import UNet2DConditionModel

    from models.fuseanypart.train import TINY_UNET_CONFIG

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, **{**TINY_UNET_CONFIG, "in_channels": in_channels})
    unet.save_pretrained(str(root / "unet"))
    return unet


def test_conv_in_trains_with_a_frozen_unet_so_the_mask_channels_learn(dataset, tmp_path):
    base = _tiny_base(tmp_path, 4)
    tr = FapTrainer(_cfg(base_unet=str(tmp_path), out=str(tmp_path / "run")), dataset)
    w0 = tr.core.unet.conv_in.weight.detach().clone()
    assert torch.equal(w0[:, :4], base.conv_in.weight) and float(w0[:, 4:].abs().max()) == 0.0   # widened
    other = tr.core.unet.down_blocks[0].resnets[0].conv1.weight.detach().clone()
    tr.step()
    w1 = tr.core.unet.conv_in.weight.detach()
    assert float(w1[:, 8].abs().max()) > 0 and float(w1[:, 4:8].abs().max()) > 0   # mask + masked latent moved
    assert torch.equal(tr.core.unet.down_blocks[0].resnets[0].conv1.weight, other)  # the rest stays frozen
    path = tr.save(export=False)
    again = FapTrainer(_cfg(base_unet=str(tmp_path), out=str(tmp_path / "run"), resume=True), dataset)
    assert again.global_step == 1 and torch.equal(again.core.unet.conv_in.weight, w1)
    assert os.path.isfile(path)


def test_a_9_channel_inpainting_base_keeps_its_channel_meaning(tmp_path):
    from models.fuseanypart.train import widen_conv_in

    base = _tiny_base(tmp_path, 9)
    w = base.conv_in.weight.detach().clone()       # diffusers inpainting: noisy (4), mask (1), masked latent (4)
    got = widen_conv_in(base).conv_in.weight
    assert torch.equal(got[:, 0:4], w[:, 0:4])     # authors: noisy (4), masked latent (4), mask (1)
    assert torch.equal(got[:, 4:8], w[:, 5:9]) and torch.equal(got[:, 8], w[:, 4])
    with pytest.raises(ValueError, match="8 input channels.*4 \\(SD1.5\\) or 9"):
        widen_conv_in(_tiny_base(tmp_path / "odd", 8))


def test_loss_drops_export_reloads_and_resume_is_bit_identical(dataset, tmp_path):
    # (a) loss on the real photos (obama x3 one identity, three singletons), 64 px, tiny models.
    t0 = time.time()
    tr = FapTrainer(_cfg(train_unet=True, lr=2e-3, out=str(tmp_path / "a")), dataset)
    losses = tr.train(24, log_every=0)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"loss first-5 mean {first:.4f}, last-5 mean {last:.4f}, ratio {last / first:.3f}, "
          f"{time.time() - t0:.1f}s")
    assert last < 0.9 * first

    # (b) the fap.bin-layout export reloads through the released-path loader, every key used.
    tr.save()
    for name in ("fap.bin", "fap.safetensors"):
        state = checkpoints.load_fap_state(str(tmp_path / "a" / name))
        unet_sd, mlp_sd, proj_sd, width = checkpoints.split_fap_state(state, conv_in_order="authors")
        mlp, projectors = checkpoints.build_adapter(mlp_sd, proj_sd)
        assert width == tr.clip.width and sorted(proj_sd) == sorted(SD15_ATTN2_NAMES)
        core = tr.core
        assert set(unet_sd) == set(core.unet.state_dict())
        core.unet.load_state_dict(unet_sd, strict=True)          # every UNet key used, shapes match
        for k, v in core.mlp.state_dict().items():
            assert torch.equal(mlp.state_dict()[k], v)
        for k, v in core.projectors.state_dict().items():
            assert torch.equal(projectors.state_dict()[k], v)

    # (c) resume: 2 steps, checkpoint, 2 more == resumed from the checkpoint, 2 steps; bit for bit.
    out = str(tmp_path / "b")
    a = FapTrainer(_cfg(out=out), dataset)
    a.train(2, log_every=0)
    a.save(export=False)
    a.train(2, log_every=0)
    b = FapTrainer(_cfg(out=out, resume=True), dataset)
    assert b.global_step == 2
    b.train(2, log_every=0)
    assert a.losses == b.losses
    sa, sb = a.core.state_dict(), b.core.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_clip_inputs_get_the_authors_256_px_resize_like_the_nodes(dataset, monkeypatch):
    from models.fuseanypart import clip_inputs

    sizes = []
    real = clip_inputs.authors_resize
    monkeypatch.setattr(clip_inputs, "authors_resize", lambda x, size=256: (sizes.append((len(x), size)), real(x, size))[1])
    tr = FapTrainer(_cfg(), dataset)
    tr.prepare_inputs(tr.next_batch())
    assert sizes == [(8, 256)]                     # target + 3 references, batch 2
    off = FapTrainer(_cfg(clip_resize=0), dataset)
    off.prepare_inputs(off.next_batch())
    assert sizes == [(8, 256)]
