"""Body/head tracking for GSwap (paper step 3: track the target video, and re-track the generated frames).

`fit_track` fits a `BodySurface` (models/gswap/body.py) to 68 2D face landmarks per frame (iBUG order, e.g.
FaceSet landmarks68 from models/face/detect.py) and optional body keypoints:
- per frame: head rotation (the surface's global_orient, parameterised about the surface's head centre so
  rotation and translation decouple), head position, jaw pose (if the surface has a jaw), neck rotation (if
  it has a neck joint and body keypoints are given, `fit_neck`), expression (if present, within the
  surface's expression_range);
- shared: shape (betas);
- camera: pinhole, fixed, focal fx = fy = focal_scale * max(H, W) (default 1.5: about 37 degrees across the
  long side, a portrait lens) unless given, principal point at the image centre. The camera does not move;
  the body moves. extrinsics (world -> camera, OpenCV: x right, y down, z forward) is the same matrix for
  every frame: diag(1, -1, -1, 1), i.e. the camera sits at the world origin looking down world -z, and a
  surface (y up, face towards +z) faces it with identity rotation.

Loss: mean squared landmark reprojection error (px^2) over frames that have landmarks, plus small L2 priors
(betas, expression, jaw, neck) and, weighted by `smooth`, L2 on the velocity and acceleration of every
per-frame parameter, expressed in pixel-equivalent units (translation through f / depth, rotations through
a 0.1 m lever). Optimiser: Adam on CPU, `progress(step, total)` once per step, early stop when the loss
improves by less than `tol` (relative) over 20 steps.
Smoothness: `smooth` weighs the acceleration term, `smooth * smooth_velocity` the velocity term (default 0:
a velocity penalty drags real head motion). Frames without landmarks keep their place: after the
fit their parameters are linearly interpolated from the nearest frames with landmarks and `interpolated`
flags them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .surface import BodyParams, BodySurface, batch_rodrigues

OPENCV_FROM_SURFACE = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class BodyTrack:
    """A fitted track of T frames.

    params: BodyParams with batch T (betas repeated per frame); K [3, 3]; extrinsics [T, 4, 4] world ->
    camera (OpenCV); valid [T] bool (the frame had landmarks); interpolated [T] bool (params interpolated
    from neighbours: no landmarks); errors_px [T] mean landmark reprojection error in px (nan where no
    landmarks); projected68 [T, 68, 2] the fitted landmarks in the image; image_size (H, W); iterations run;
    surface name.
    """
    params: BodyParams
    K: torch.Tensor
    extrinsics: torch.Tensor
    valid: torch.Tensor
    interpolated: torch.Tensor
    errors_px: torch.Tensor
    projected68: torch.Tensor
    image_size: Tuple[int, int]
    iterations: int = 0
    surface: str = ""
    loss_history: List[float] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.valid.shape[0])


def default_intrinsics(image_size: Tuple[int, int], focal: Optional[float] = None, focal_scale: float = 1.5
                       ) -> torch.Tensor:
    """Pinhole K [3, 3] for an (H, W) image: f = focal or focal_scale * max(H, W), centre (W / 2, H / 2)."""
    H, W = image_size
    f = float(focal) if focal is not None else focal_scale * max(H, W)
    return torch.tensor([[f, 0.0, W / 2.0], [0.0, f, H / 2.0], [0.0, 0.0, 1.0]])


def project(points: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Pinhole projection: points [B, N, 3] world, K [3, 3] or [B, 3, 3], extrinsics [B, 4, 4] or [4, 4]
    world -> camera (OpenCV) -> pixels [B, N, 2] (x right, y down; depth clamped at 1e-6)."""
    if extrinsics.dim() == 2:
        extrinsics = extrinsics.expand(points.shape[0], 4, 4)
    if K.dim() == 2:
        K = K.expand(points.shape[0], 3, 3)
    cam = points @ extrinsics[:, :3, :3].transpose(1, 2) + extrinsics[:, None, :3, 3]
    pix = cam @ K.transpose(1, 2)
    return pix[..., :2] / pix[..., 2:].clamp_min(1e-6)


def _interp_indices(valid: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each frame: the previous and next valid frame and the blend weight of the next (linear in time;
    at the ends the nearest valid frame)."""
    T = len(valid)
    idx = np.flatnonzero(valid)
    prev = np.zeros(T, np.int64)
    nxt = np.zeros(T, np.int64)
    w = np.zeros(T)
    for t in range(T):
        before, after = idx[idx <= t], idx[idx >= t]
        p = before[-1] if len(before) else after[0]
        n = after[0] if len(after) else before[-1]
        prev[t], nxt[t] = p, n
        w[t] = 0.0 if n == p else (t - p) / (n - p)
    return prev, nxt, w


def _lerp_frames(x: torch.Tensor, valid: np.ndarray) -> torch.Tensor:
    prev, nxt, w = _interp_indices(valid)
    wt = torch.tensor(w, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return (1 - wt) * x[prev] + wt * x[nxt]


class _Variables(torch.nn.Module):
    """The tracker's free variables: per-frame head rotation, head-centre position, jaw, neck, expression
    and shared betas."""

    def __init__(self, surface: BodySurface, T: int, fit_neck: bool = True):
        super().__init__()
        P = torch.nn.Parameter
        self.rot = P(torch.zeros(T, 3))
        self.head = P(torch.zeros(T, 3))
        self.betas = P(torch.zeros(1, surface.num_betas))
        self.jaw = P(torch.zeros(T, 3)) if surface.has_jaw else None
        self.neck = P(torch.zeros(T, 3)) if surface.neck_slot is not None and fit_neck else None
        self.expr = P(torch.zeros(T, surface.num_expression)) if surface.num_expression else None

    def per_frame(self) -> List[torch.Tensor]:
        return [v for v in (self.rot, self.head, self.jaw, self.neck, self.expr) if v is not None]


def _evaluate(surface: BodySurface, v: _Variables, T: int):
    """BodyParams of the variables and the posed landmarks [T, 68, 3] (world) and joints."""
    body_pose = None  # no body pose unless the neck is fitted (surfaces then skip the per-frame bone chain)
    if surface.num_body_joints and v.neck is not None:
        s = surface.neck_slot
        body_pose = torch.zeros(T, 3 * surface.num_body_joints)
        body_pose = torch.cat([body_pose[:, :3 * s], v.neck, body_pose[:, 3 * s + 3:]], 1)
    params = BodyParams(betas=v.betas.expand(T, -1), global_orient=v.rot, body_pose=body_pose, jaw_pose=v.jaw,
                        expression=v.expr, transl=torch.zeros(T, 3))
    lmk, joints = surface.landmark_forward(params)
    # Rotation about the head centre: choose transl so that the rest head centre c (rotated about the root
    # joint J0 by global_orient) lands on `head`: transl = head - R (c - J0) - J0.
    J0 = joints[:, 0]
    R = batch_rodrigues(v.rot)
    c = surface.head_center
    transl = v.head - (R @ (c - J0)[..., None])[..., 0] - J0
    params.transl = transl
    return params, lmk + transl[:, None], joints + transl[:, None]


def _head_from_transl(surface: BodySurface, params: BodyParams) -> torch.Tensor:
    """Inverse of the reparameterisation in `_evaluate`: the head-centre position of given params."""
    p = BodyParams(**{k: v for k, v in params.__dict__.items()})
    p.transl = torch.zeros_like(params.transl)
    with torch.no_grad():
        J0 = surface.landmark_forward(p)[1][:, 0]
    R = batch_rodrigues(params.global_orient)
    return params.transl + (R @ (surface.head_center - J0)[..., None])[..., 0] + J0


def _init_from_landmarks(surface: BodySurface, lm: torch.Tensor, valid: np.ndarray, K: torch.Tensor) -> torch.Tensor:
    """Head-centre positions [T, 3] from the eye centres: depth from the eye distance in px (frontal guess),
    then the rest offset from the eye midpoint to the head centre."""
    with torch.no_grad():
        rl = surface.landmark_forward(surface.zero_params(1))[0][0]
    eye_l, eye_r = rl[36:42].mean(0), rl[42:48].mean(0)
    eye_m = (rl[36:48].mean(0))
    dist_m = (eye_l - eye_r).norm()
    f = K[0, 0]
    out = torch.zeros(lm.shape[0], 3)
    px_dist = (lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1)).norm(dim=-1).clamp_min(1.0)
    depth = f * dist_m / px_dist
    eye_px = lm[:, 36:48].mean(1)
    x = (eye_px[:, 0] - K[0, 2]) / f * depth
    y = (eye_px[:, 1] - K[1, 2]) / f * depth
    cam = torch.stack([x, y, depth], -1)
    world = cam * torch.tensor([1.0, -1.0, -1.0])      # OpenCV camera -> world (inverse of diag(1,-1,-1))
    out = world + (surface.head_center - eye_m)
    out = _lerp_frames(out, valid)
    return out


def fit_track(surface: BodySurface, landmarks68, image_size: Tuple[int, int], valid=None, iters: int = 300,
              smooth: float = 0.1, init: Optional[BodyTrack] = None, progress: Optional[Callable[[int, int], None]] = None,
              focal: Optional[float] = None, lr: Optional[float] = None, tol: float = 1e-3,
              body_keypoints=None, body_joint_ids: Optional[Sequence[int]] = None,
              prior: float = 1.0, smooth_velocity: float = 0.0, fit_neck: Optional[bool] = None,
              shape_iters: Optional[int] = None, fit_expression: bool = True) -> BodyTrack:
    """Fits `surface` to per-frame 2D landmarks.

    landmarks68 [T, 68, 2] px (x right, y down; rows of frames without a face are ignored); image_size
    (H, W); valid [T] bool (default: all); iters: maximum Adam steps (early stop at relative improvement
    < tol over 20 steps); smooth: weight of the temporal acceleration term (0 = none; smooth_velocity adds velocity); init: a
    previous BodyTrack to start from (re-track mode: use fewer iters); progress(step, total) once per step;
    focal: px (default 1.5 * max(H, W)); body_keypoints [T, K, 3] (x, y, confidence) matched to surface
    joints `body_joint_ids`; prior: weight of the L2 priors on betas / expression / jaw / neck; fit_neck: fit a
    per-frame neck rotation (default: only with body keypoints; from the face alone the head rotation about
    its centre explains the same motion, and surfaces skip the per-frame bone chain without a body pose).
    Expression coefficients are kept inside the surface's `expression_range` (projected steps). shape_iters: the
    shared shape (betas) is optimised during the first shape_iters steps only, then frozen (surfaces may then
    reuse their rest model: Anny's costs most of a step); default 60, and 0 in re-track mode (the init track's
    shape is kept, so generated frames and the original video share one body shape). fit_expression False
    (re-track mode only): the init track's expression and jaw are kept and only the head pose is refined, so a
    face whose proportions differ from the tracked one (a source face on the target's motion) cannot turn its
    proportions into expression coefficients the original video's track does not have.
    """
    lm = torch.as_tensor(np.asarray(landmarks68, np.float32))
    T = lm.shape[0]
    valid_np = np.ones(T, bool) if valid is None else np.asarray(valid, bool).copy()
    valid_np &= np.isfinite(lm.numpy()).all(axis=(1, 2))
    if not valid_np.any():
        raise ValueError("SwapForge: no frame has face landmarks; the tracker needs at least one frame with a face.")
    lm = torch.nan_to_num(lm)
    vmask = torch.tensor(valid_np)
    K = default_intrinsics(image_size, focal) if init is None else init.K.clone()
    E = OPENCV_FROM_SURFACE.clone()
    Es = E.expand(T, 4, 4)
    if fit_neck is None:  # the 68 face landmarks alone cannot tell a neck turn from a head turn
        fit_neck = body_keypoints is not None
    v = _Variables(surface, T, fit_neck)
    with torch.no_grad():
        if init is not None:
            if len(init) != T:
                raise ValueError(f"SwapForge: the initial track has {len(init)} frames, the landmarks {T}.")
            ip = init.params
            v.rot.copy_(ip.global_orient)
            v.head.copy_(_head_from_transl(surface, ip))
            v.betas.copy_(ip.betas[:1])
            if v.jaw is not None and ip.jaw_pose is not None:
                v.jaw.copy_(ip.jaw_pose)
            if v.neck is not None and ip.body_pose is not None:
                s = surface.neck_slot
                v.neck.copy_(ip.body_pose[:, 3 * s:3 * s + 3])
            if v.expr is not None and ip.expression is not None:
                v.expr.copy_(ip.expression)
        else:
            v.head.copy_(_init_from_landmarks(surface, lm, valid_np, K))
    depth = (-v.head[:, 2]).detach().clamp_min(0.05).mean()
    px_per_m = float(K[0, 0] / depth)
    kp = None
    if body_keypoints is not None:
        kp = torch.as_tensor(np.asarray(body_keypoints, np.float32))
        kp_ids = list(body_joint_ids)

    if lr is None:
        lr = 0.02 if init is None else 0.005  # re-track starts near the optimum: smaller steps
    groups = [{"params": [v.rot], "lr": lr}, {"params": [v.head], "lr": lr * 0.1},
              {"params": [v.betas], "lr": lr * 2}]
    for x, scale in ((v.jaw, 1.0), (v.neck, 1.0), (v.expr, 2.0)):
        if x is not None:
            groups.append({"params": [x], "lr": lr * scale})
    opt = torch.optim.Adam(groups)
    # Pixel-equivalent weights of the per-frame variables in the smoothness terms.
    units = {"rot": 0.1 * px_per_m, "head": px_per_m, "jaw": 0.05 * px_per_m, "neck": 0.1 * px_per_m,
             "expr": 1.0}
    history: List[float] = []
    steps = 0
    if not fit_expression:
        if init is None:
            raise ValueError("SwapForge: fit_expression=False keeps the expression of an initial track; give init.")
        for x in (v.expr, v.jaw):
            if x is not None:
                x.requires_grad_(False)
    if shape_iters is None:
        shape_iters = 0 if init is not None else 60
    for step in range(iters):
        if step == shape_iters:
            v.betas.requires_grad_(False)
        opt.zero_grad()
        params, lmk3, joints3 = _evaluate(surface, v, T)
        proj = project(lmk3, K, Es)
        res = ((proj - lm) ** 2).sum(-1)                       # [T, 68]
        data = res[vmask].mean()
        loss = data
        if kp is not None:
            jp = project(joints3[:, kp_ids], K, Es)
            loss = loss + (kp[..., 2] * ((jp - kp[..., :2]) ** 2).sum(-1)).mean()
        reg = (v.betas ** 2).sum()
        for x in (v.jaw, v.neck):
            if x is not None:
                reg = reg + 10.0 * (x ** 2).sum(-1).mean()
        if v.expr is not None:
            reg = reg + (v.expr ** 2).sum(-1).mean()
        loss = loss + prior * reg
        if smooth > 0 and T > 1:
            sm = 0.0
            for name in ("rot", "head", "jaw", "neck", "expr"):
                x = getattr(v, name)
                if x is None:
                    continue
                x = x * units[name]
                if smooth_velocity > 0:
                    sm = sm + smooth_velocity * ((x[1:] - x[:-1]) ** 2).sum(-1).mean()
                if T > 2:
                    acc = x[2:] - 2 * x[1:-1] + x[:-2]
                    sm = sm + (acc ** 2).sum(-1).mean()
            loss = loss + smooth * sm
        loss.backward()
        opt.step()
        if v.expr is not None and surface.expression_range is not None:
            with torch.no_grad():  # projected steps: coefficients stay in the surface's range
                v.expr.clamp_(*surface.expression_range)
        steps = step + 1
        history.append(float(loss.detach()))
        if progress is not None:
            progress(steps, iters)
        if steps >= (20 if init is not None else 40) and steps % 10 == 0:
            old_best, new_best = min(history[:-20] or history[:1]), min(history[-20:])
            if (old_best - new_best) <= tol * max(abs(old_best), 1e-12):
                break

    with torch.no_grad():
        interpolated = ~vmask
        if interpolated.any():
            for x in v.per_frame():
                x.copy_(_lerp_frames(x, valid_np))
        params, lmk3, _ = _evaluate(surface, v, T)
        proj = project(lmk3, K, Es)
        err = (proj - lm).norm(dim=-1).mean(-1)
        err = torch.where(vmask, err, torch.full_like(err, float("nan")))
    return BodyTrack(params=params.detach(), K=K, extrinsics=Es.clone(), valid=vmask, interpolated=interpolated,
                     errors_px=err, projected68=proj.detach(), image_size=(int(image_size[0]), int(image_size[1])),
                     iterations=steps, surface=surface.name, loss_history=history)
