"""Reference Parts (the compact FuseAnyPart reference node) gives exactly what the stage-by-stage chain of the
template gives: Detect Faces -> Align & Crop (ffhq, 512) -> Detect Faces on the crop -> Part Detector."""
import numpy as np
import pytest
import torch

from synthclip import photo


def test_reference_parts_equals_the_four_node_chain(N):
    fm = N["SwapForge_FaceModelLoader"]().load("dlib_mmod (embedded)", 0)[0]
    img = torch.from_numpy(photo("biden.jpg"))[None]
    faces = N["SwapForge_DetectFaces"]().detect(fm, img, 0.5, 32, 0, "largest_first")[0]
    crops, _, _ = N["SwapForge_AlignCrop"]().crop(img, faces, "512", "ffhq")
    on_crop = N["SwapForge_DetectFaces"]().detect(fm, crops, 0.5, 32, 0, "largest_first")[0]
    chain = N["SwapForge_PartDetector"]().detect(crops, on_crop, "landmarks", "box", "eyes . eyebrows", "nose",
                                                 "mouth", 0.35, 0.25, 0.2, 0)[0]
    crop, ps, report = N["SwapForge_ReferenceParts"]().prepare(fm, img, "512", "landmarks")
    assert crop.shape == (1, 512, 512, 3) and torch.equal(crop, crops[:1])
    for p in ("eyes", "nose", "mouth"):
        assert np.array_equal(ps.frames[0][0].as_dict()[p], chain.frames[0][0].as_dict()[p])
    assert "parts from landmarks" in report


def test_reference_parts_says_when_the_photo_has_no_face(N):
    fm = N["SwapForge_FaceModelLoader"]().load("dlib_mmod (embedded)", 0)[0]
    with pytest.raises(ValueError, match="no face found in the reference photo"):
        N["SwapForge_ReferenceParts"]().prepare(fm, torch.full((1, 128, 128, 3), 0.5), "512", "landmarks")
    with pytest.raises(ValueError, match="Connect Load Grounding DINO"):
        N["SwapForge_ReferenceParts"]().prepare(fm, torch.full((1, 128, 128, 3), 0.5), "512", "grounding_dino")
