"""Procedural human videos from a seed, with exact depth, face boxes/masks, COCO-18 keypoints, identity.

A person is an articulated figure of capsules (torso, limbs, neck) and an ellipsoid head. An identity
vector (IDENTITY_DIM standard normals) fixes body proportions, clothing and skin colors and a face
pattern (eye spacing/size/color, mouth, cheek marks, hairline), so two clips of one identity show the
same person. Motions (walk, dance, wave) move the limbs widely; camera distance, focal length, pan
and background vary per clip. Rendering is the ray caster in `render.py`.

World space: y up, metres, the figure stands on the floor y = 0 and faces +z at yaw 0. The camera
looks along -z, horizontally, so floor and back wall are axis-aligned planes in camera space.
"""
import dataclasses
import json
import os

import numpy as np

from data_pipelines import layout, render
from data_pipelines.layout import ClipEntry, write_manifest
from data_pipelines.poses.keypoints import BODY_NAMES

IDENTITY_DIM = 32
MOTIONS = ("walk", "dance", "wave")
# The typical walking direction: yaw 1.2 rad, mostly across the frame (to the right), the face
# still turned enough towards the camera to count as visible.
WALK_YAW = 1.2
# COCO-18 (OpenPose) order, the pose format's (data_pipelines/poses/keypoints.py; its
# annotate.synthetic_keypoints turns a clip's keypoints into that format).
KEYPOINT_NAMES = BODY_NAMES
_TO_CAM = np.diag([1.0, -1.0, -1.0]).astype(np.float32)   # world -> camera axes (x, -y, -z)


def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _hsv(h, s, v):
  i = np.floor(h * 6) % 6
  f = h * 6 - np.floor(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][int(i)],
                  np.float32)


@dataclasses.dataclass(frozen=True)
class Identity:
  vector: np.ndarray   # (IDENTITY_DIM,) float32

  @staticmethod
  def from_seed(seed: int) -> "Identity":
    return Identity(np.random.default_rng([seed, 7]).standard_normal(IDENTITY_DIM)
                    .astype(np.float32))

  def body(self) -> dict:
    z = self.vector
    hgt = 1.55 + 0.35 * _sig(z[0])
    skin = np.array([0.95, 0.80, 0.68]) * (1 - 0.55 * _sig(z[11])) + 0.05
    return dict(
        height=hgt, shoulder=(0.32 + 0.14 * _sig(z[1])) * hgt / 1.75,
        hip=(0.20 + 0.10 * _sig(z[2])) * hgt / 1.75,
        head=np.array([1.0, 1.22, 1.08]) * (0.085 + 0.03 * _sig(z[3])),
        arm_r=0.032 + 0.022 * _sig(z[4]), leg_r=0.05 + 0.03 * _sig(z[5]),
        torso_r=0.11 + 0.07 * _sig(z[6]),
        shirt=_hsv(_sig(z[7]), 0.45 + 0.5 * _sig(z[8]), 0.85),
        pants=_hsv(_sig(z[9]), 0.3 + 0.6 * _sig(z[10]), 0.25 + 0.5 * _sig(z[10] * 0.7)),
        skin=skin.astype(np.float32), hair=_hsv(_sig(z[12]) * 0.15, 0.6, 0.1 + 0.5 * _sig(z[13])),
        eye_sep=0.22 + 0.16 * _sig(z[14]), eye_r=0.08 + 0.08 * _sig(z[15]),
        eye=_hsv(_sig(z[16]), 0.8, 0.2 + 0.5 * _sig(z[17])), mouth_w=0.12 + 0.25 * _sig(z[18]),
        mouth=_hsv(0.95 + 0.05 * _sig(z[19]), 0.7, 0.6), mark=_hsv(_sig(z[20]), 0.9, 0.9),
        mark_r=0.06 + 0.12 * _sig(z[21]), mark_y=-0.3 + 0.5 * _sig(z[22]),
        hairline=0.35 + 0.4 * _sig(z[23]))


def _limb_dir(side, abd, flex):
  """Direction of a limb hanging down (0,-1,0), raised sideways by abd and forward by flex."""
  d = np.stack([side * np.sin(abd), -np.cos(abd) * np.cos(flex), np.cos(abd) * np.sin(flex)], -1)
  return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _motion(kind: str, t: np.ndarray, rng: np.random.Generator, variation: float = 1.0) -> dict:
  """Joint angles (radians) and root motion per frame for one motion kind; arrays of len(t).

  `variation` scales each random draw of the motion (tempo, amplitude, starting phase, walking
  speed and direction, turning rate) from its typical value (0) to its full range (1). At 0 a
  clip's motion is fixed by its kind, which the first frame's pose shows (a walker then crosses
  the frame to the right, half-turned towards the camera): one image determines the video. The
  draws are made either way, so the rest of the clip is unchanged.
  """
  def vary(x, typical):
    return typical + variation * (x - typical)
  f = vary(rng.uniform(0.6, 1.3), 0.75)
  amp = vary(rng.uniform(0.8, 1.25), 1.0)
  ph = vary(rng.uniform(0, 2 * np.pi), 0.0)
  w = 2 * np.pi * f * t + ph
  z = np.zeros_like(t)
  m = dict(yaw=z + rng.uniform(-0.7, 0.7), twist=z, squat=z, root_x=z, root_z=z, head_yaw=z,
           r_abd=z + 0.1, l_abd=z + 0.1, r_flex=z, l_flex=z, r_elbow=z + 0.2, l_elbow=z + 0.2,
           r_hip=z, l_hip=z, r_knee=z, l_knee=z, r_hip_abd=z + 0.05, l_hip_abd=z + 0.05)
  if kind == "walk":
    s = np.sin(w)
    m.update(r_hip=0.55 * amp * s, l_hip=-0.55 * amp * s,
             r_knee=0.8 * amp * np.maximum(0, -np.cos(w)), l_knee=0.8 * amp * np.maximum(0, np.cos(w)),
             r_flex=-0.6 * amp * s, l_flex=0.6 * amp * s, r_elbow=0.4 + 0.2 * s, l_elbow=0.4 - 0.2 * s,
             squat=0.03 * np.abs(np.cos(w)))
    speed = vary(rng.uniform(0.2, 0.5), 0.35)
    m["yaw"] = vary(m["yaw"], WALK_YAW)
    m["root_x"] = np.sin(m["yaw"]) * speed * (t - t.mean())
    m["root_z"] = np.cos(m["yaw"]) * speed * (t - t.mean())
  elif kind == "dance":
    m.update(r_abd=1.3 + 1.0 * amp * np.sin(w), l_abd=1.3 + 1.0 * amp * np.sin(w + np.pi * 0.7),
             r_flex=0.7 * np.sin(0.5 * w + 1), l_flex=0.7 * np.sin(0.5 * w + 2),
             r_elbow=0.9 + 0.7 * np.sin(2 * w), l_elbow=0.9 + 0.7 * np.cos(2 * w),
             twist=0.5 * amp * np.sin(0.5 * w), squat=0.12 * amp * (1 - np.cos(2 * w)) / 2,
             r_hip_abd=0.1 + 0.25 * np.maximum(0, np.sin(w)), l_hip_abd=0.1 + 0.25 * np.maximum(0, -np.sin(w)),
             head_yaw=0.3 * np.sin(w))
    m["r_knee"] = m["l_knee"] = 2.2 * m["squat"] / 0.12 * 0.4
    m["r_hip"] = m["l_hip"] = m["r_knee"] * 0.5
    m["yaw"] = m["yaw"] + vary(rng.uniform(-0.6, 0.6), 0.0) * (t - t.mean())
  elif kind == "wave":
    both = rng.random() < 0.4
    m.update(r_abd=z + 2.5 * amp, r_elbow=0.9 + 0.6 * np.sin(2 * w),
             r_flex=0.3 + 0.2 * np.sin(w), l_flex=0.3 * np.sin(w), head_yaw=0.2 * np.sin(0.5 * w))
    if both:
      m.update(l_abd=z + 2.5 * amp, l_elbow=0.9 + 0.6 * np.sin(2 * w + np.pi))
  else:
    raise ValueError(f"unknown motion {kind!r}; expected one of {MOTIONS}")
  return m


def _rot_y(a):
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)


def pose_figure(body: dict, m: dict, i: int):
  """World-space joints for frame i: dict name -> (3,), and the head rotation (3,3)."""
  hgt = body["height"]
  thigh, shin, upper, fore = 0.245 * hgt, 0.225 * hgt, 0.17 * hgt, 0.15 * hgt
  torso, neck_len = 0.29 * hgt, 0.045 * hgt
  root = np.array([m["root_x"][i], thigh + shin + 0.04 - m["squat"][i], m["root_z"][i]], np.float32)
  yaw = _rot_y(m["yaw"][i])
  tw = _rot_y(m["twist"][i])
  j = {"pelvis": np.zeros(3, np.float32)}
  j["neck"] = tw @ np.array([0, torso, 0.0])
  for side, name in ((-1, "r"), (1, "l")):   # the person's right is -x when facing +z
    sh = j["neck"] + tw @ np.array([side * body["shoulder"] / 2, -0.04 * hgt, 0])
    d1 = tw @ _limb_dir(side, m[f"{name}_abd"][i], m[f"{name}_flex"][i])
    d2 = tw @ _limb_dir(side, m[f"{name}_abd"][i], m[f"{name}_flex"][i] + m[f"{name}_elbow"][i])
    j[f"{name}_shoulder"], j[f"{name}_elbow"] = sh, sh + upper * d1
    j[f"{name}_wrist"] = j[f"{name}_elbow"] + fore * d2
    hp = np.array([side * body["hip"] / 2, 0, 0])
    k1 = _limb_dir(side, m[f"{name}_hip_abd"][i], m[f"{name}_hip"][i])
    k2 = _limb_dir(side, m[f"{name}_hip_abd"][i], m[f"{name}_hip"][i] - m[f"{name}_knee"][i])
    j[f"{name}_hip"], j[f"{name}_knee"] = hp, hp + thigh * k1
    j[f"{name}_ankle"] = j[f"{name}_knee"] + shin * k2
  j["head"] = j["neck"] + np.array([0, neck_len + body["head"][1] * 0.9, 0])
  j = {k: (yaw @ v + root).astype(np.float32) for k, v in j.items()}
  head_rot = yaw @ tw @ _rot_y(m["head_yaw"][i])
  return j, head_rot.astype(np.float32)


def _face_shader(body: dict):
  def shade(p):   # p: points on the unit sphere in head axes (x: person's left, y up, z front)
    x, y, zf = p[:, 0], p[:, 1], p[:, 2]
    col = np.broadcast_to(body["skin"], p.shape).copy()
    front = zf > 0.2
    for sx in (-1, 1):
      col[front & (np.hypot(x - sx * body["eye_sep"], y - 0.2) < body["eye_r"])] = body["eye"]
      col[front & (np.hypot(x - sx * 0.5, y - body["mark_y"]) < body["mark_r"])] = body["mark"]
    col[front & (np.abs(x) < body["mouth_w"]) & (np.abs(y + 0.42) < 0.07)] = body["mouth"]
    col[(y > body["hairline"]) | (zf < -0.25)] = body["hair"]
    return col
  return shade


def _head_points(n=96):
  """Fixed points on the unit sphere (Fibonacci lattice) for the projected head outline."""
  k = np.arange(n) + 0.5
  phi, th = np.arccos(1 - 2 * k / n), np.pi * (1 + 5 ** 0.5) * k
  return np.stack([np.cos(th) * np.sin(phi), np.cos(phi), np.sin(th) * np.sin(phi)], -1)


_HEAD_KP_LOCAL = {"nose": (0, -0.05, 1), "r_eye": (-0.3, 0.2, 0.93), "l_eye": (0.3, 0.2, 0.93),
                  "r_ear": (-1, 0.05, 0), "l_ear": (1, 0.05, 0)}


@dataclasses.dataclass
class Clip:
  rgb: np.ndarray          # (F, H, W, 3) uint8
  depth: np.ndarray        # (F, H, W) float32 z-depth in metres (larger = farther)
  face_mask: np.ndarray    # (F, H, W) bool: visible head pixels
  face_box: np.ndarray     # (F, 4) float32 xyxy pixels: projected head ellipsoid, clipped
  face_present: np.ndarray  # (F,) bool: head visible and turned towards the camera
  keypoints: np.ndarray    # (F, 18, 3) float32 (x, y, z-depth), COCO-18 order
  prim: np.ndarray         # (F, H, W) int16 primitive ids (-1 background)
  identity: np.ndarray     # (IDENTITY_DIM,) float32
  motion: str
  caption: str
  head_id: int             # primitive id of the head in `prim`
  camera: render.Camera = None
  scenes: list = None      # per frame (capsules, ellipsoids, background) when keep_scenes
  normal: np.ndarray = None  # (F, H, W, 3) float32 unit camera-space normals of the figure, else 0


def _clip_motion(seed, num_frames, height, width, fps, identity_seed, motion, motion_variation):
  """The random draws of a clip that fix its figure and camera, in render_clip's order (its
  background is drawn next from the returned generator)."""
  rng = np.random.default_rng([seed, 11])
  ident = Identity.from_seed(seed if identity_seed is None else identity_seed)
  body = ident.body()
  motion = motion or MOTIONS[int(rng.integers(len(MOTIONS)))]
  t = np.arange(num_frames) / fps
  m = _motion(motion, t, rng, motion_variation)
  dist = rng.uniform(2.8, 4.2)
  frac = rng.uniform(0.65, 0.85) * (1.0 if height >= width else 0.9)
  focal = frac * height * dist / (body["height"] + 0.3)
  cam = render.Camera(focal, height, width)
  cam_h = body["height"] * rng.uniform(0.45, 0.6)
  pan = rng.uniform(-0.15, 0.15) * motion_variation
  return rng, ident, body, motion, t, m, cam, cam_h, dist, pan


def _frame_figure(body, m, t, i, cam_h, dist, pan):
  """Frame i's world joints, the world -> camera map, the head's camera center and rotation."""
  j, head_rot = pose_figure(body, m, i)
  eye = np.array([pan * t[i], cam_h, dist], np.float32)
  to_cam = lambda p: (_TO_CAM @ (p - eye)).astype(np.float32)  # noqa: E731
  return j, to_cam, to_cam(j["head"]), _TO_CAM @ head_rot


def _keypoints(j, to_cam, head_c, rot_cam, radii, cam) -> np.ndarray:
  """(18, 3): COCO-18 (x, y pixels, z depth); the face points on the head ellipsoid."""
  kp = []
  for name in KEYPOINT_NAMES:
    if name in _HEAD_KP_LOCAL:
      loc = np.asarray(_HEAD_KP_LOCAL[name], np.float32)
      p = head_c + (loc / np.linalg.norm(loc) * radii) @ rot_cam.T
    else:
      p = to_cam(j[name])
    kp.append(np.concatenate([cam.project(p), p[2:3]]))
  return np.stack(kp)


def clip_keypoints(seed: int, num_frames: int, height: int, width: int, fps: float = 8.0,
                   identity_seed: int | None = None, motion: str | None = None,
                   motion_variation: float = 1.0) -> np.ndarray:
  """(F, 18, 3) the keypoints `render_clip` gives for the same arguments, without rendering
  (milliseconds a clip): training data for the pose aligner."""
  _, _, body, _, t, m, cam, cam_h, dist, pan = _clip_motion(
      seed, num_frames, height, width, fps, identity_seed, motion, motion_variation)
  radii = body["head"].astype(np.float32)
  frames = []
  for i in range(num_frames):
    j, to_cam, head_c, rot_cam = _frame_figure(body, m, t, i, cam_h, dist, pan)
    frames.append(_keypoints(j, to_cam, head_c, rot_cam, radii, cam))
  return np.stack(frames).astype(np.float32)


def render_clip(seed: int, num_frames: int, height: int, width: int, fps: float = 8.0,
                identity_seed: int | None = None, motion: str | None = None,
                keep_scenes: bool = False, motion_variation: float = 1.0) -> Clip:
  """One clip, fully determined by (seed, identity_seed, sizes, motion, motion_variation).

  `motion_variation` (see `_motion`) also scales the camera's pan; 0 leaves it still.
  """
  rng, ident, body, motion, t, m, cam, cam_h, dist, pan = _clip_motion(
      seed, num_frames, height, width, fps, identity_seed, motion, motion_variation)
  wall = rng.uniform(1.5, 4.0)
  c1, c2 = _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.9)), \
      _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8))
  period, floor_c = rng.uniform(0.2, 0.8), _hsv(rng.random(), 0.3, rng.uniform(0.3, 0.6))

  stripes = np.stack([c1, c2]).astype(np.float32)
  tiles = np.stack([floor_c * 0.8, floor_c]).astype(np.float32)

  def wall_fn(p):
    return stripes[(np.floor(p[:, 0] / period) % 2).astype(np.int64)]

  def floor_fn(p):
    return tiles[((np.floor(p[:, 0] / 0.5) + np.floor(p[:, 2] / 0.5)) % 2).astype(np.int64)]

  shade, ring = _face_shader(body), _head_points()
  out = {k: [] for k in ("rgb", "depth", "prim", "normal", "box", "present", "kp", "scene")}
  bones = [("neck", "pelvis", body["torso_r"], "shirt"), ("r_shoulder", "l_shoulder", body["arm_r"] * 1.3, "shirt"),
           ("r_shoulder", "r_elbow", body["arm_r"], "shirt"), ("l_shoulder", "l_elbow", body["arm_r"], "shirt"),
           ("r_elbow", "r_wrist", body["arm_r"] * 0.85, "skin"), ("l_elbow", "l_wrist", body["arm_r"] * 0.85, "skin"),
           ("r_hip", "l_hip", body["leg_r"], "pants"), ("r_hip", "r_knee", body["leg_r"], "pants"),
           ("l_hip", "l_knee", body["leg_r"], "pants"), ("r_knee", "r_ankle", body["leg_r"] * 0.8, "pants"),
           ("l_knee", "l_ankle", body["leg_r"] * 0.8, "pants"), ("neck", "head", body["arm_r"], "skin")]
  radii = body["head"].astype(np.float32)
  for i in range(num_frames):
    j, to_cam, head_c, rot_cam = _frame_figure(body, m, t, i, cam_h, dist, pan)
    caps = [(to_cam(j[a]), to_cam(j[b]), r, body[c]) for a, b, r, c in bones]
    scene = (caps, [(head_c, rot_cam, radii, shade)], (cam_h, dist + wall, floor_fn, wall_fn))
    fr = render.render(cam, *scene)
    if keep_scenes:
      out["scene"].append(scene)
    ring_cam = head_c + (ring * radii) @ rot_cam.T
    uv = cam.project(ring_cam)
    box = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()], np.float32)
    box = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
    facing = -rot_cam[2, 2] > 0.25     # head's forward axis points towards the camera (-z)
    present = bool(facing and (fr.prim == len(caps)).sum() >= 4)
    kp = _keypoints(j, to_cam, head_c, rot_cam, radii, cam)
    out["rgb"].append(fr.rgb), out["depth"].append(fr.depth), out["prim"].append(fr.prim)
    out["normal"].append(fr.normal)
    out["box"].append(box), out["present"].append(present), out["kp"].append(kp)
  prim = np.stack(out["prim"])
  caption = _caption_from_meta({"motion": motion})
  return Clip(rgb=np.round(np.stack(out["rgb"]) * 255).astype(np.uint8),
              depth=np.stack(out["depth"]).astype(np.float32), face_mask=prim == len(bones),
              face_box=np.stack(out["box"]), face_present=np.array(out["present"]),
              keypoints=np.stack(out["kp"]).astype(np.float32), prim=prim,
              identity=ident.vector, motion=motion, caption=caption, head_id=len(bones),
              camera=cam, scenes=out["scene"] if keep_scenes else None,
              normal=np.stack(out["normal"]).astype(np.float32))


def write_dataset(root: str, num_clips: int, num_frames: int, height: int, width: int,
                  fps: float = 8.0, seed: int = 0, num_identities: int | None = None,
                  vertical_fraction: float = 0.25, split: str = "train", progress=None,
                  motion_variation: float = 1.0) -> list[ClipEntry]:
  """Renders clips into the real-data layout (see layout.py) and returns the manifest entries.

  ROOT/videos/<id>.mp4, ROOT/depth/<id>.npy (float32 (F, H, W) metres, larger = farther),
  ROOT/faces/<id>.npz (boxes, present, masks, identity, keypoints), ROOT/manifest.jsonl,
  ROOT/poses/<id>/keypoints.npz (the keypoints in the pose format, poses/annotate.py).
  A `vertical_fraction` of clips swap height and width (portrait videos). Existing clips are kept.
  `motion_variation` is `render_clip`'s.
  """
  from data_pipelines import video
  from data_pipelines.poses import annotate as poses_annotate
  entries = []
  for d in ("videos", "depth", "faces"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
  for plan in clip_plans(num_clips, seed, num_identities, vertical_fraction, height, width, progress):
    clip_id, ident, (h, w) = plan.clip_id, plan.identity_seed, plan.size
    vpath = os.path.join(root, "videos", clip_id + ".mp4")
    fpath = os.path.join(root, "faces", clip_id + ".npz")
    kpath = poses_annotate.keypoints_file(layout.poses_root(root), clip_id)
    if not (os.path.isfile(vpath) and os.path.isfile(fpath) and os.path.isfile(kpath)):
      c = plan.render(num_frames, fps, motion_variation)
      poses_annotate.write_poses(layout.poses_root(root), clip_id,
                                 poses_annotate.synthetic_keypoints(c.keypoints, h, w),
                                 images=False)
      dpath = os.path.join(root, "depth", clip_id + ".npy")
      with open(_tmp(dpath), "wb") as f:
        np.save(f, c.depth)
      os.replace(_tmp(dpath), dpath)
      with open(_tmp(fpath), "wb") as f:
        np.savez_compressed(f, boxes=c.face_box, present=c.face_present, masks=c.face_mask,
                            identity=c.identity, keypoints=c.keypoints,
                            meta=json.dumps({"motion": c.motion, "identity_seed": ident}))
      os.replace(_tmp(fpath), fpath)
      # Lossless (crf 0): x264's lossy output varies from run to run on such small frames, and
      # the clips must decode to the same pixels everywhere (the demo is deterministic for a seed).
      video.write_video(vpath, c.rgb, fps, crf=0)
      caption = c.caption
    else:
      with np.load(fpath) as z:
        caption = _caption_from_meta(json.loads(str(z["meta"])))
    entries.append(ClipEntry(clip_id, vpath, caption, split))
  write_manifest(root, entries)
  return entries


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """One clip of a synthetic dataset before it is rendered (`clip_plans`)."""
  clip_id: str
  render_seed: int
  identity_seed: int
  size: tuple            # (height, width)
  vertical: bool

  def render(self, num_frames: int, fps: float, motion_variation: float) -> Clip:
    return render_clip(self.render_seed, num_frames, *self.size, fps,
                       identity_seed=self.identity_seed, motion_variation=motion_variation)


def clip_plans(num_clips, seed, num_identities=None, vertical_fraction=0.25, height=480,
               width=720, progress=None):
  """The clips `write_dataset` and `write_official_dataset` render, in order: ids, seeds, sizes."""
  rng = np.random.default_rng([seed, 3])
  num_identities = num_identities or num_clips
  it = range(num_clips) if progress is None else progress(range(num_clips))
  for k in it:
    vertical = rng.random() < vertical_fraction
    ident = int(rng.integers(num_identities)) + 1000 * seed
    h, w = (max(height, width), min(height, width)) if vertical else (height, width)
    yield ClipPlan(f"syn{seed:03d}_{k:05d}", seed * 100003 + k, ident, (h, w), vertical)


def write_official_dataset(root: str, num_clips: int, num_frames: int, height: int, width: int,
                           fps: float = 8.0, seed: int = 0, num_identities: int | None = None,
                           vertical_fraction: float = 0.25, progress=None,
                           motion_variation: float = 1.0, ref_short=None,
                           dense: bool = False) -> list[str]:
  """Renders the clips `write_dataset` renders (same ids, seeds and sizes) into the official
  StableAnimator layout (official_layout.py): ROOT/{rec,vec}/<id>/images/frame_<i>.png (portrait
  clips under vec/), faces/ (the face boxes filled, 0/255, all 255 where the face is not
  present), poses/ (skeletons of the exact keypoints, poses/draw.py; `ref_short` its canvas,
  None: the frame size), and with `dense` VividPose's dense/ (the figure's normal map,
  dense_maps.py). Returns the official clip ids (`<rec|vec>_<id>`); complete clips are kept.
  """
  from data_pipelines.dense_maps import normal_map
  from data_pipelines import video
  from data_pipelines.faces import box_masks
  from data_pipelines.poses import annotate as poses_annotate
  from data_pipelines.poses import draw
  ids = []
  for plan in clip_plans(num_clips, seed, num_identities, vertical_fraction, height, width, progress):
    sub = "vec" if plan.vertical else "rec"
    folder = os.path.join(root, sub, plan.clip_id)
    ids.append(f"{sub}_{plan.clip_id}")
    dirs = {k: os.path.join(folder, k) for k in ("images", "faces", "poses") + ("dense",) * dense}
    if all(os.path.isdir(d) and len(os.listdir(d)) == num_frames for d in dirs.values()):
      continue
    c = plan.render(num_frames, fps, motion_variation)
    masks = box_masks(c.face_box, c.face_present, *plan.size)
    masks[~c.face_present] = True
    skeletons = draw.draw_poses(poses_annotate.synthetic_keypoints(c.keypoints, *plan.size),
                                *plan.size, ref_short)
    for d in dirs.values():
      os.makedirs(d, exist_ok=True)
    for i in range(num_frames):
      name = f"frame_{i}.png"
      video.write_image(os.path.join(dirs["faces"], name),
                        np.repeat(masks[i, :, :, None].astype(np.uint8) * 255, 3, -1))
      video.write_image(os.path.join(dirs["poses"], name), skeletons[i])
      video.write_image(os.path.join(dirs["images"], name), c.rgb[i])
      if dense:
        video.write_image(os.path.join(dirs["dense"], name), normal_map(c.normal[i]))
  return ids


def _caption_from_meta(meta: dict) -> str:
  verb = {"walk": "walking", "dance": "dancing", "wave": "waving"}[meta["motion"]]
  return f"a person {verb} in front of a striped wall"


def _tmp(path: str) -> str:
  return f"{path}.tmp{os.getpid()}"
