"""The `ui` outputs web/swapforge.js reads (face picker, part boxes) and the Part Detector's `boxes` widget, on the
real two-face photo tests/data/two_faces.jpg (Biden left, Obama right and larger, so `largest_first` numbers
them right to left)."""
import json
import os

import numpy as np
import pytest
import torch

from models.partswap import part_detect, part_edit, parts
from synthclip import photo


@pytest.fixture(scope="module")
def two(N, fm):
    img = torch.from_numpy(photo("two_faces.jpg"))[None]
    faces = N["SwapForge_DetectFaces"]().detect(fm, img, 0.5, 32, 0, "largest_first")[0]
    assert faces.counts() == [2]
    return img, faces


@pytest.fixture(autouse=True)
def _temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SWAPFORGE_TEMP_DIR", str(tmp_path))


def comfy_reads(out):
    """What ComfyUI 0.3.64's execution.get_output_from_returns takes from a node's return value."""
    assert isinstance(out, dict) and "ui" in out and "result" in out
    return out["ui"], out.get("result", None)


def test_node_output_is_ui_plus_result_for_comfyui_and_the_result_tuple_for_python(N, two):
    img, faces = two
    out = N["SwapForge_SelectFaces"]().select(faces, "index", "1", 0.0, image=img)
    ui, result = comfy_reads(out)
    assert isinstance(result, tuple) and len(result) == 1 and result[0] is out[0]
    (sel,) = out  # unpacking and len see the result, as before
    assert len(out) == 1 and sel.counts() == [1]
    assert "swapforge_faces" in ui


def test_face_picker_lists_faces_in_the_nodes_own_order_with_a_preview_of_that_frame(N, two, tmp_path):
    img, faces = two
    h, w = faces.frame_size
    ui, _ = comfy_reads(N["SwapForge_SelectFaces"]().select(faces, "index", "0", 0.0, image=img))
    entry = ui["swapforge_faces"][0]
    assert entry["widget"] == "indices" and entry["frame"] == 0 and (entry["height"], entry["width"]) == (h, w)
    # boxes in pixel-edge units, normalised, in the FaceSet's order (index k = the face the node calls k)
    for k, b in enumerate(entry["boxes"]):
        x0, y0, x1, y1 = faces.frames[0].boxes[k]
        assert b == pytest.approx([(x0 + 0.5) / w, (y0 + 0.5) / h, (x1 + 0.5) / w, (y1 + 0.5) / h], abs=1e-5)
    # largest first: face 0 is Obama on the right, face 1 Biden on the left
    assert entry["boxes"][0][0] > 0.5 > entry["boxes"][1][2]
    ref = entry["image"]
    path = os.path.join(str(tmp_path), ref["subfolder"], ref["filename"])
    assert ref["type"] == "temp" and os.path.isfile(path)
    from PIL import Image
    pic = Image.open(path)
    assert pic.size == (512, round(h * 512 / w))  # downscaled to 512 px on the long side
    small = np.asarray(Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).resize(pic.size,
                                                                                              Image.BOX))
    assert np.abs(np.asarray(pic, np.float32) - small).mean() < 4  # the frame itself (JPEG, area-resized)
    # selecting index 1 keeps the face the picker drew as box 1
    sel = N["SwapForge_SelectFaces"]().select(faces, "index", "1", 0.0)[0]
    assert np.array_equal(sel.frames[0].boxes[0], faces.frames[0].boxes[1])


def test_classic_swap_edits_the_face_the_picker_numbers_k(N, fm, two):
    img, faces = two
    src = torch.from_numpy(photo("grace_hopper.jpg"))[None]
    for k in (0, 1):
        out = N["SwapForge_ClassicPartSwap"]().swap(fm, img, "alpha", "none", k, 0.15, 0.1, mouth_source=src)
        ui, (image, mask, status) = comfy_reads(out)
        m = mask[0].numpy()
        hh, ww = m.shape

        def mass(box, grow):
            x0, y0, x1, y1 = box
            dx, dy = grow * (x1 - x0), grow * (y1 - y0)
            return m[max(0, int((y0 - dy) * hh)):int(np.ceil((y1 + dy) * hh)),
                     max(0, int((x0 - dx) * ww)):int(np.ceil((x1 + dx) * ww))].sum()

        boxes = ui["swapforge_faces"][0]["boxes"]
        assert m.sum() > 100
        assert mass(boxes[k], 0.25) == pytest.approx(m.sum()), f"face {k}: the mask lies outside box {k}"
        assert mass(boxes[1 - k], 0.0) == 0, f"face {k}: the other face was edited"


def test_part_detector_without_edits_is_unchanged_and_reports_its_boxes(N, two):
    img, faces = two
    args = dict(eyes_prompt="eyes", nose_prompt="nose", mouth_prompt="mouth", box_threshold=0.35,
                text_threshold=0.25, face_margin=0.2, face_index=-1)
    out = N["SwapForge_PartDetector"]().detect(img, faces, "landmarks", "box", **args)
    ui, (ps, *_rest) = comfy_reads(out)
    ref = parts.compute_parts(faces)
    entry = ui["swapforge_parts"][0]
    assert len(entry["faces"]) == 2
    for k, f in enumerate(entry["faces"]):
        for p in parts.PARTS:
            assert f["detected"][p] == pytest.approx(ref.frames[0][k].as_dict()[p].tolist(), abs=1e-6)
            assert f["parts"][p] == f["detected"][p]
            assert np.array_equal(ps.frames[0][k].as_dict()[p], ref.frames[0][k].as_dict()[p])
    assert ui["swapforge_faces"][0]["image"] == entry["image"]  # one preview file for both


def test_part_detector_uses_the_edited_box_tiled_in_its_masks(N, two):
    img, faces = two
    ref = parts.compute_parts(faces).frames[0][1]
    eh = float(ref.eyes[2] - ref.eyes[0])
    nh = float(ref.nose[2] - ref.nose[0])
    # top 10% of its height lower, 20% wider to the left, bottom 30% of the nose's height below the nose top
    eyes = ref.eyes.astype(np.float64) + [0.1 * eh, -0.2 * float(ref.eyes[3] - ref.eyes[1]), 0.3 * nh, 0.0]
    boxes = json.dumps({"face": 1, "eyes": eyes.tolist()})
    args = dict(eyes_prompt="eyes", nose_prompt="nose", mouth_prompt="mouth", box_threshold=0.35,
                text_threshold=0.25, face_margin=0.2, face_index=1)
    ps, eyes_mask, nose_mask, _, _, report = N["SwapForge_PartDetector"]().detect(
        img, faces, "landmarks", "box", **args, boxes=boxes)
    got = ps.frames[0][1]
    # eyes y1 moved below the nose top: the edited box keeps its edge, the detector's nose starts there
    split = eyes[2]
    assert got.eyes == pytest.approx([eyes[0], eyes[1], split, eyes[3]], abs=1e-6)
    assert got.nose == pytest.approx([split, ref.nose[1], ref.nose[2], ref.nose[3]], abs=1e-6)
    assert np.array_equal(got.mouth, ref.mouth)
    assert np.array_equal(ps.frames[0][0].eyes, parts.compute_parts(faces).frames[0][0].eyes)  # face 0 untouched
    h, w = faces.frame_size
    assert np.array_equal(eyes_mask[0].numpy(), parts.box_mask(got.eyes, (h, w)))
    assert "edited boxes (eyes) on face 1" in report


def test_box_edits_reject_what_is_not_a_box_and_say_what_is_expected():
    assert not part_edit.parse_box_edits("")
    for bad in ("{", "[1, 2]", '{"eyes": [0.5, 0.1, 0.4, 0.9]}', '{"eyes": [0, 0, 1]}', '{"face": -1}',
                '{"lips": [0.1, 0.1, 0.2, 0.2]}', '{"nose": [0.1, 0.1, 1.5, 0.2]}'):
        with pytest.raises(ValueError, match=r"\[y0, x0, y1, x1\]"):
            part_edit.parse_box_edits(bad)


def test_two_edited_neighbours_are_split_by_the_detectors_rule_and_an_edited_box_beats_a_detected_one():
    eyes, nose, mouth = [0.30, 0.2, 0.42, 0.8], [0.40, 0.4, 0.58, 0.6], [0.62, 0.3, 0.75, 0.7]
    both = part_edit.tile_edited({"eyes": eyes, "nose": nose, "mouth": mouth}, {"eyes", "nose"})
    # eyes/nose both edited, nose top 0.40 below the eyes' centre 0.36: midpoint of 0.42 and 0.40
    assert both["eyes"][2] == pytest.approx(0.41) and both["nose"][0] == pytest.approx(0.41)
    # nose edited, mouth detected: the nose's bottom 0.58 stays, the mouth starts there
    assert both["nose"][2] == pytest.approx(0.58) and both["mouth"][0] == pytest.approx(0.58)
    only_mouth = part_edit.tile_edited({"eyes": eyes, "nose": nose, "mouth": mouth}, {"mouth"})
    assert only_mouth["nose"][2] == pytest.approx(0.62)  # the edited mouth's top wins
    high_nose = [0.33, 0.4, 0.58, 0.6]  # starts above the eyes' centre: the eyes keep their bottom
    assert part_edit.tile_edited({"eyes": eyes, "nose": high_nose, "mouth": mouth}, set())["nose"][0] == \
        pytest.approx(0.42)


def test_tiled_edits_come_back_unchanged_and_unstacked_ones_are_refused(two):
    _, faces = two
    ps = parts.compute_parts(faces)
    pb = ps.frames[0][0]
    edits = part_edit.parse_box_edits(json.dumps({"face": 0, **{p: b.tolist() for p, b in pb.as_dict().items()}}))
    out, notes = part_edit.apply_box_edits(ps, edits)
    for p in parts.PARTS:
        assert np.array_equal(out.frames[0][0].as_dict()[p], pb.as_dict()[p])
    assert notes == []
    swapped = part_edit.parse_box_edits(json.dumps({"face": 0, "eyes": pb.mouth.tolist(), "mouth": pb.eyes.tolist()}))
    with pytest.raises(ValueError, match="not stacked top to bottom"):
        part_edit.apply_box_edits(ps, swapped)
    far = part_edit.parse_box_edits(json.dumps({"face": 5, "eyes": pb.eyes.tolist()}))
    out, notes = part_edit.apply_box_edits(ps, far)
    assert notes == ["frame 0: no face 5, the edited boxes were not used"]
    assert part_detect.PARTS == parts.PARTS
