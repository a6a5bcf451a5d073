"""FuseAnyPart checkpoints: fap.bin layout, conv_in reordering, strict adapter loading, safetensors export."""
from __future__ import annotations

import os
import stat

import pytest
import torch
import torch.nn.functional as F

from models.fuseanypart.checkpoints import (
    FapCheckpointError,
    FapWeightsMissing,
    build_adapter,
    check_clip_width,
    export_safetensors,
    load_fap_state,
    reorder_conv_in_to_comfy,
    split_fap_state,
)
from models.fuseanypart.injection import SD15_ATTN2_LAYERS

# SD1.5's 16 attn2 layers, written out by hand, with tiny widths (SD1.5 width / 40) for the test file
HAND_LAYERS = (
    [f"down_blocks.{x}.attentions.{i}.transformer_blocks.0.attn2" for x in range(3) for i in range(2)]
    + ["mid_block.attentions.0.transformer_blocks.0.attn2"]
    + [f"up_blocks.{x}.attentions.{i}.transformer_blocks.0.attn2" for x in (1, 2, 3) for i in range(3)]
)
HAND_WIDTHS = [8, 8, 16, 16, 32, 32, 32, 32, 32, 32, 16, 16, 16, 8, 8, 8]
HAND_COMFY_KEYS = ([("input", n, 0) for n in (1, 2, 4, 5, 7, 8)] + [("middle", 0, 0)]
                   + [("output", n, 0) for n in range(3, 12)])
CLIP_D = 12


def _fake_fap_state(seed=0):
    """A dict in fap.bin's exact key layout, tiny widths (projectors 768 -> 8/16/32, CLIP width 12)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    unet = {
        "conv_in.weight": r(8, 9, 3, 3), "conv_in.bias": r(8),
        "conv_out.weight": r(4, 8, 3, 3), "conv_out.bias": r(4),
        "time_embedding.linear_1.weight": r(16, 8),
    }
    for name, width in zip(HAND_LAYERS, HAND_WIDTHS):
        unet[f"{name}.to_q.weight"] = r(width, width)
        unet[f"{name}.to_out.0.weight"] = r(width, width)
        unet[f"{name}.to_out.0.bias"] = r(width)
        unet[f"{name}.processor.image_projector.weight"] = r(width, 768)
        unet[f"{name}.processor.image_projector.bias"] = r(width)
    image_proj2 = {"proj.0.weight": r(CLIP_D, CLIP_D), "proj.0.bias": r(CLIP_D),
                   "proj.2.weight": r(768, CLIP_D), "proj.2.bias": r(768),
                   "proj.3.weight": r(768), "proj.3.bias": r(768)}
    image_proj = {"latents": r(1, 16, 768), "proj_in.weight": r(768, CLIP_D)}
    return {"unet": unet, "image_proj2": image_proj2, "image_proj": image_proj}


@pytest.fixture()
def fap_file(tmp_path):
    state = _fake_fap_state()
    path = tmp_path / "fap.bin"
    torch.save(state, path)
    return str(path), state


def test_conv_in_reordered_weight_on_comfy_input_equals_original_on_authors_input():
    torch.manual_seed(0)
    weight, bias = torch.randn(8, 9, 3, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    noisy, masked, mask = (torch.randn(2, 4, 10, 10, dtype=torch.float64),
                           torch.randn(2, 4, 10, 10, dtype=torch.float64),
                           (torch.rand(2, 1, 10, 10) > 0.5).double())
    authors = F.conv2d(torch.cat([noisy, masked, mask], 1), weight, bias, padding=1)
    comfy = F.conv2d(torch.cat([noisy, mask, masked], 1), reorder_conv_in_to_comfy(weight), bias, padding=1)
    torch.testing.assert_close(comfy, authors)
    with pytest.raises(FapCheckpointError, match="9 input channels"):
        reorder_conv_in_to_comfy(weight[:, :4])


def test_fap_bin_loads_every_key_and_maps_projectors_to_the_16_comfy_keys(fap_file):
    path, original = fap_file
    state = load_fap_state(path)
    unet_sd, mlp_sd, projector_sd, clip_width = split_fap_state(state)
    assert clip_width == CLIP_D

    # every UNet key is either kept in unet_sd or becomes a projector, none lost, none invented
    projector_keys = {k for k in original["unet"] if ".processor.image_projector." in k}
    assert len(projector_keys) == 32
    assert set(unet_sd) == set(original["unet"]) - projector_keys
    for key in unet_sd:
        if key != "conv_in.weight":
            assert torch.equal(unet_sd[key], original["unet"][key])
    w = original["unet"]["conv_in.weight"]
    assert torch.equal(unet_sd["conv_in.weight"][:, 4], w[:, 8])          # mask channel now 5th
    assert torch.equal(unet_sd["conv_in.weight"][:, 5:9], w[:, 4:8])      # masked latent after it

    mlp, projectors = build_adapter(mlp_sd, projector_sd)
    for key, value in original["image_proj2"].items():
        assert torch.equal(mlp.state_dict()[key], value)
    assert [layer.comfy_key for layer in SD15_ATTN2_LAYERS] == HAND_COMFY_KEYS
    for name, comfy_key, width in zip(HAND_LAYERS, HAND_COMFY_KEYS, HAND_WIDTHS):
        lin = projectors[comfy_key]
        assert lin is projectors[name]
        assert lin.weight.shape == (width, 768)
        assert torch.equal(lin.weight, original["unet"][f"{name}.processor.image_projector.weight"])
        assert torch.equal(lin.bias, original["unet"][f"{name}.processor.image_projector.bias"])


def test_build_adapter_lists_missing_and_unexpected_keys(fap_file):
    _, _, projector_sd, _ = split_fap_state(load_fap_state(fap_file[0]))
    mlp_sd = dict(_fake_fap_state()["image_proj2"])
    extra = dict(mlp_sd, **{"proj.4.weight": torch.zeros(3)})
    del extra["proj.3.bias"]
    with pytest.raises(FapCheckpointError, match=r"missing \['proj.3.bias'\], unexpected \['proj.4.weight'\]"):
        build_adapter(extra, projector_sd)
    fewer = dict(projector_sd)
    del fewer["mid_block.attentions.0.transformer_blocks.0.attn2"]
    fewer["mid_block.attentions.0.transformer_blocks.1.attn2"] = projector_sd["mid_block.attentions.0.transformer_blocks.0.attn2"]
    with pytest.raises(FapCheckpointError, match=r"missing \['mid_block.attentions.0.transformer_blocks.0.attn2'\], "
                                                 r"unexpected \['mid_block.attentions.0.transformer_blocks.1.attn2'\]"):
        build_adapter(mlp_sd, fewer)


def test_clip_width_mismatch_is_refused_naming_both_widths_and_models():
    check_clip_width(1280, 1280)
    with pytest.raises(FapCheckpointError) as err:
        check_clip_width(1280, 1024)
    msg = str(err.value)
    assert "1280" in msg and "1024" in msg and "ViT-H/14" in msg and "ViT-L/14" in msg


def test_missing_file_says_where_to_get_it(tmp_path):
    path = tmp_path / "models" / "fap.bin"
    with pytest.raises(FapWeightsMissing) as err:
        load_fap_state(str(path))
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for needle in (str(path), str(path.parent), "3.4 GB", "Thomas-Tom/FuseAnyPart", "licence", "research"):
        assert needle in msg, needle


def test_truncated_file_gives_clear_error_naming_the_path(fap_file, tmp_path):
    path, _ = fap_file
    cut = tmp_path / "cut.bin"
    with open(path, "rb") as f:
        cut.write_bytes(f.read(100))
    with pytest.raises(FapCheckpointError, match="truncated or corrupt") as err:
        load_fap_state(str(cut))
    assert str(cut) in str(err.value)


def test_dict_without_unet_lists_keys_found_and_expected(tmp_path):
    path = tmp_path / "other.bin"
    torch.save({"state_dict": {}, "image_proj2": {}}, path)
    with pytest.raises(FapCheckpointError, match=r"\['image_proj2', 'state_dict'\], expected \['unet', 'image_proj2'\]"):
        load_fap_state(str(path))


def test_safetensors_export_round_trips_exactly(fap_file, tmp_path):
    path, original = fap_file
    out = tmp_path / "fap.safetensors"
    export_safetensors(load_fap_state(path), str(out))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    back = load_fap_state(str(out))
    assert set(back) == set(original)
    for group, tensors in original.items():
        assert set(back[group]) == set(tensors)
        for key, value in tensors.items():
            assert back[group][key].dtype == value.dtype and torch.equal(back[group][key], value), (group, key)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(out.read_bytes()[:100])
    with pytest.raises(FapCheckpointError, match="truncated or corrupt"):
        load_fap_state(str(cut))
