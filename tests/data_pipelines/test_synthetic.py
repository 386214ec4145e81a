"""The synthetic renderer's labels agree with its pixels: depth, masks, face boxes, keypoints."""
import json
import os

import numpy as np
import pytest

from data_pipelines import render, synthetic


@pytest.fixture(scope="module", params=[(48, 72), (72, 48)], ids=["horizontal", "vertical"])
def clip(request):
  h, w = request.param
  return synthetic.render_clip(seed=4, num_frames=4, height=h, width=w, motion="dance",
                               keep_scenes=True)


def test_shapes_and_determinism(clip):
  f, h, w = clip.depth.shape
  assert clip.rgb.shape == (f, h, w, 3) and clip.keypoints.shape == (f, 18, 3)
  again = synthetic.render_clip(seed=4, num_frames=4, height=h, width=w, motion="dance")
  np.testing.assert_array_equal(again.rgb, clip.rgb)
  np.testing.assert_array_equal(again.depth, clip.depth)


def test_depth_is_the_nearest_surface_per_pixel(clip):
  """Every primitive rendered alone: the composite keeps the smallest depth and its primitive id."""
  cam = clip.camera
  caps, ells, bg = clip.scenes[0]
  alone = [render.render(cam, [c], [], bg) for c in caps] + [render.render(cam, [], [e], bg)
                                                             for e in ells]
  stack = np.stack([np.where(a.prim >= 0, a.depth, np.inf) for a in alone])
  bg_only = render.render(cam, [], [], bg)
  nearest = np.minimum(stack.min(0), bg_only.depth)
  np.testing.assert_allclose(clip.depth[0], nearest, rtol=1e-6)
  hit = clip.prim[0] >= 0
  np.testing.assert_array_equal(clip.prim[0][hit], stack.argmin(0)[hit])
  overlap = (np.isfinite(stack).sum(0) >= 2)
  assert overlap.any()       # limbs do cross the torso in this pose, so the test bites
  # Background pixels show exactly the background render.
  np.testing.assert_array_equal(clip.rgb[0][~hit], np.round(bg_only.rgb[~hit] * 255).astype(np.uint8))


def test_face_box_mask_and_head_keypoints_agree(clip):
  head = [synthetic.KEYPOINT_NAMES.index(n) for n in ("nose", "r_eye", "l_eye", "r_ear", "l_ear")]
  for t in range(len(clip.depth)):
    x0, y0, x1, y1 = clip.face_box[t]
    kp = clip.keypoints[t, head, :2]
    assert np.all((kp[:, 0] >= x0 - 0.5) & (kp[:, 0] <= x1 + 0.5))
    assert np.all((kp[:, 1] >= y0 - 0.5) & (kp[:, 1] <= y1 + 0.5))
    ys, xs = np.nonzero(clip.face_mask[t])
    assert len(ys) > 0
    assert xs.min() >= np.floor(x0) and xs.max() < np.ceil(x1) + 1
    assert ys.min() >= np.floor(y0) and ys.max() < np.ceil(y1) + 1
    np.testing.assert_array_equal(clip.face_mask[t], clip.prim[t] == clip.head_id)


def test_keypoints_lie_behind_or_on_the_rendered_surface():
  """A joint is inside its capsules, so the visible surface at its pixel is at most as far.

  Rendered large enough that limbs are several pixels wide at the joint's pixel center.
  """
  clip = synthetic.render_clip(seed=4, num_frames=3, height=144, width=216, motion="walk")
  f, h, w = clip.depth.shape
  body = [i for i, n in enumerate(synthetic.KEYPOINT_NAMES) if "eye" not in n and "ear" not in n
          and n != "nose"]
  checked = 0
  for t in range(f):
    for k in body:
      x, y, z = clip.keypoints[t, k]
      if 0 <= x < w and 0 <= y < h:
        assert clip.depth[t, int(y), int(x)] <= z + 1e-4
        checked += 1
  assert checked > 20


def test_identity_fixes_appearance():
  a = synthetic.render_clip(seed=1, num_frames=1, height=48, width=72, identity_seed=9)
  b = synthetic.render_clip(seed=2, num_frames=1, height=48, width=72, identity_seed=9)
  np.testing.assert_array_equal(a.identity, b.identity)
  c = synthetic.render_clip(seed=1, num_frames=1, height=48, width=72, identity_seed=10)
  assert not np.array_equal(a.identity, c.identity)


@pytest.mark.parametrize("kind", synthetic.MOTIONS)
def test_motion_variation_zero_leaves_only_the_facing_random(kind):
  """At motion_variation 0 the joint angles and the walk follow the motion kind alone; only the
  facing of figures that do not walk stays random."""
  t = np.arange(9) / 4.0
  runs = {v: [synthetic._motion(kind, t, np.random.default_rng([s, 11]), v) for s in (1, 2, 3)]
          for v in (0.0, 1.0)}
  for m in runs[0.0][1:]:
    for name, angles in m.items():
      if (name == "yaw" and kind != "walk") or (kind == "wave" and name.startswith("l_")):
        continue      # the facing of dancers and wavers; waving with one or both hands
      np.testing.assert_allclose(angles, runs[0.0][0][name], atol=1e-6, err_msg=name)
    np.testing.assert_allclose(m["yaw"] - m["yaw"][0], 0.0, atol=1e-6)   # no turning
  if kind == "walk":     # across the frame, to the right (+x)
    np.testing.assert_allclose(runs[0.0][0]["yaw"], synthetic.WALK_YAW)
    assert np.all(np.diff(runs[0.0][0]["root_x"]) > 0)
  else:
    assert runs[0.0][0]["yaw"][0] != runs[0.0][1]["yaw"][0]
  # At full variation the same draws give other tempi and phases.
  assert not np.allclose(runs[1.0][0]["r_elbow"], runs[1.0][1]["r_elbow"])


def test_motion_variation_zero_keeps_the_camera_and_the_rest_of_the_clip():
  still = synthetic.render_clip(seed=5, num_frames=5, height=48, width=32, fps=4.0, motion="walk",
                                motion_variation=0.0)
  full = synthetic.render_clip(seed=5, num_frames=5, height=48, width=32, fps=4.0, motion="walk")
  assert still.camera == full.camera                   # same draws after the motion's
  np.testing.assert_array_equal(still.identity, full.identity)
  assert not np.array_equal(still.rgb[1:], full.rgb[1:])
  # With the pan gone, the background (wall rows above the figure) does not move.
  np.testing.assert_array_equal(still.rgb[:, 0], np.broadcast_to(still.rgb[0, 0], still.rgb[:, 0].shape))


def test_write_dataset_under_a_relative_root(tmp_path, monkeypatch):
  """A root relative to the working directory (the demo's runs/demo/...) reads back its videos."""
  from data_pipelines import layout
  monkeypatch.chdir(tmp_path)
  entries = synthetic.write_dataset(os.path.join("runs", "data"), num_clips=2, num_frames=1,
                                    height=16, width=16)
  back = layout.read_manifest(os.path.join("runs", "data"))
  assert [e.path for e in back] == [e.path for e in entries]
  assert all(os.path.isfile(e.path) for e in back)
  with open(os.path.join("runs", "data", "manifest.jsonl")) as f:
    assert all(json.loads(line)["path"].startswith("videos/") for line in f)


def test_written_clips_decode_to_the_rendered_frames(tmp_path):
  """Lossless: a clip decodes to its rendered frames after the yuv420p round trip, bit for bit, so
  the same seed gives the same training data on every machine (x264's lossy output varies)."""
  import av
  from data_pipelines import layout, video
  synthetic.write_dataset(str(tmp_path), num_clips=1, num_frames=9, height=48, width=32, fps=4.0,
                          vertical_fraction=0.0, motion_variation=0.0)
  entry = layout.read_manifest(str(tmp_path))[0]
  rgb = synthetic.render_clip(0, 9, 48, 32, 4.0, identity_seed=0, motion_variation=0.0).rgb
  yuv = np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
                  .to_ndarray(format="rgb24") for f in rgb])
  np.testing.assert_array_equal(video.read_frames(entry.path), yuv)


def test_normals_are_the_surfaces_of_the_rendered_primitives(clip):
  # Every figure pixel's normal is unit and faces the camera; stepping back from the visible
  # point along it by a capsule's radius lands on that capsule's axis segment.
  cam, (caps, _, _) = clip.camera, clip.scenes[0]
  n, prim, depth = clip.normal[0], clip.prim[0], clip.depth[0]
  hit = prim >= 0
  assert hit.any() and np.all(n[~hit] == 0)
  np.testing.assert_allclose(np.linalg.norm(n[hit], axis=-1), 1.0, atol=1e-5)
  rays = cam.grid()
  assert np.all(np.sum(n[hit] * rays[hit], -1) < 1e-4)
  points = rays * depth[..., None]
  for i, (pa, pb, r, _) in enumerate(caps):
    sel = prim == i
    if not sel.any():
      continue
    axis = points[sel] - r * n[sel]
    ba = pb - pa
    s = np.clip(((axis - pa) @ ba) / (ba @ ba), 0, 1)
    np.testing.assert_allclose(axis, pa + s[:, None] * ba, atol=1e-4 * float(np.abs(pa).max()))


def test_dense_maps_pose_the_reference_body_with_the_driving_motion():
  from data_pipelines.dense_maps import dense_maps, normal_map
  driving = synthetic.render_clip(seed=7, num_frames=3, height=64, width=48, identity_seed=7)
  own = dense_maps(7, 7, 3, 64, 48)
  np.testing.assert_array_equal(own, normal_map(driving.normal))
  np.testing.assert_array_equal(own.any(-1), driving.prim >= 0)    # black exactly off the figure
  other = dense_maps(7, 3, 3, 64, 48)        # another body, same motion draws
  assert other.shape == own.shape and (other.any(-1) != own.any(-1)).mean() > 0.005
  with pytest.raises(ValueError, match=r"expected \(..., H, W, 3\) normals"):
    normal_map(np.zeros((4, 4)))


def test_official_layout_with_dense_maps(tmp_path):
  from data_pipelines import video
  from data_pipelines.dense_maps import normal_map
  ids = synthetic.write_official_dataset(str(tmp_path), num_clips=1, num_frames=2, height=32,
                                         width=48, seed=3, vertical_fraction=0.0, dense=True)
  folder = tmp_path / "rec" / ids[0].split("_", 1)[1]
  assert sorted(os.listdir(folder)) == ["dense", "faces", "images", "poses"]
  plan = next(synthetic.clip_plans(1, 3, None, 0.0, 32, 48))
  want = normal_map(plan.render(2, 8.0, 1.0).normal)
  for i in range(2):
    np.testing.assert_array_equal(video.read_image(str(folder / "dense" / f"frame_{i}.png")), want[i])
