"""A z-buffered ray caster in numpy for capsules, ellipsoids and two planes (floor, back wall).

Each primitive is intersected analytically with the camera rays of the pixels inside its projected
bounding box (vectorized over those pixels), so depth, masks and primitive ids are exact. The camera
sits at the origin of camera space looking along +z, with y pointing down the image.
Depth is z-depth (distance along the optical axis), in the scene's units (metres).
"""
import dataclasses

import numpy as np


@dataclasses.dataclass
class Camera:
  focal: float            # pixels
  height: int
  width: int

  def grid(self) -> np.ndarray:
    """Ray directions of every pixel, (H, W, 3), computed once per camera."""
    if getattr(self, "_grid", None) is None:
      ys, xs = np.mgrid[0:self.height, 0:self.width]
      self._grid = self.rays(ys, xs)
    return self._grid

  def rays(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Unnormalized directions (..., 3) with z = 1 through pixel centers."""
    d = np.empty(ys.shape + (3,), np.float32)
    d[..., 0] = (xs + 0.5 - self.width / 2) / self.focal
    d[..., 1] = (ys + 0.5 - self.height / 2) / self.focal
    d[..., 2] = 1.0
    return d

  def project(self, p: np.ndarray) -> np.ndarray:
    """Camera-space points (..., 3) -> pixel coordinates (..., 2) as (x, y)."""
    z = np.maximum(p[..., 2:3], 1e-6)
    return p[..., :2] / z * self.focal + np.array([self.width / 2, self.height / 2], np.float32)


def _bbox(cam: Camera, centers: np.ndarray, radius: float):
  """Pixel box covering spheres of `radius` around camera-space `centers`, or None if not visible."""
  z = centers[:, 2]
  if np.all(z - radius <= 0.05):
    return None
  zc = np.maximum(z - radius, 0.05)
  uv = cam.project(centers)
  r = radius * cam.focal / zc + 2
  x0, y0 = int(max(0, np.floor((uv[:, 0] - r).min()))), int(max(0, np.floor((uv[:, 1] - r).min())))
  x1 = int(min(cam.width, np.ceil((uv[:, 0] + r).max()) + 1))
  y1 = int(min(cam.height, np.ceil((uv[:, 1] + r).max()) + 1))
  if x0 >= x1 or y0 >= y1:
    return None
  return y0, y1, x0, x1


def _capsule_t(rd: np.ndarray, pa: np.ndarray, pb: np.ndarray, r: float):
  """Ray (origin 0, directions rd (N,3)) vs capsule pa-pb of radius r: hit parameter t (inf: miss)."""
  ba = pb - pa
  oa = -pa
  baba = ba @ ba
  bard = rd @ ba
  baoa = oa @ ba
  rdoa = rd @ oa
  rdrd = np.einsum("ni,ni->n", rd, rd)
  oaoa = oa @ oa
  a = baba * rdrd - bard * bard
  b = baba * rdoa - baoa * bard
  c = baba * oaoa - baoa * baoa - r * r * baba
  h = b * b - a * c
  t = np.full(len(rd), np.inf, np.float32)
  with np.errstate(invalid="ignore", divide="ignore"):
    tb = (-b - np.sqrt(np.maximum(h, 0))) / a
    y = baoa + tb * bard
    body = (h >= 0) & (y > 0) & (y < baba) & (tb > 0)
    t[body] = tb[body]
    for end, side in ((pa, y <= 0), (pb, y >= baba)):
      oc = -end
      bs = rd @ oc
      cs = oc @ oc - r * r
      hs = bs * bs - rdrd * cs
      ts = (-bs - np.sqrt(np.maximum(hs, 0))) / rdrd
      cap = ~body & side & (hs >= 0) & (ts > 0)
      t[cap] = np.minimum(t[cap], ts[cap])
  return t


def _capsule_normal(p: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
  ba = pb - pa
  s = np.clip(((p - pa) @ ba) / (ba @ ba), 0, 1)
  n = p - (pa + s[:, None] * ba)
  return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)


def _ellipsoid_t(rd: np.ndarray, center: np.ndarray, rot: np.ndarray, radii: np.ndarray):
  """Ray vs ellipsoid (rotation `rot` columns = local axes in camera space): t and local hit point."""
  o = (-center) @ rot / radii          # ray origin in the unit-sphere frame
  d = (rd @ rot) / radii
  a = np.einsum("ni,ni->n", d, d)
  b = d @ o
  c = o @ o - 1.0
  h = b * b - a * c
  t = np.full(len(rd), np.inf, np.float32)
  with np.errstate(invalid="ignore"):
    th = (-b - np.sqrt(np.maximum(h, 0))) / a
  hit = (h >= 0) & (th > 0)
  t[hit] = th[hit]
  local = o[None] + th[:, None] * d    # point on the unit sphere, local axes
  return t, local


@dataclasses.dataclass
class Frame:
  """Render targets of one frame."""
  rgb: np.ndarray      # (H, W, 3) float32 in [0, 1]
  depth: np.ndarray    # (H, W) float32 z-depth
  prim: np.ndarray     # (H, W) int16: -1 background, else primitive index
  normal: np.ndarray = None   # (H, W, 3) float32 unit camera-space normals of the figure, 0 elsewhere


def render(cam: Camera, capsules, ellipsoids, background) -> Frame:
  """Ray-casts the scene.

  capsules: list of (pa (3,), pb (3,), radius, color (3,)) in camera space.
  ellipsoids: list of (center (3,), rot (3,3), radii (3,), shade_fn(local (N,3)) -> colors (N,3)).
  background: (floor_y, wall_z, floor_color_fn, wall_color_fn), planes y = floor_y (camera space,
    below the camera) and z = wall_z; color functions take camera-space hit points (N, 3).
  Primitive ids: capsules first (0..), then ellipsoids.
  """
  h, w = cam.height, cam.width
  light = np.array([-0.4, -0.7, -0.6], np.float32)
  light /= np.linalg.norm(light)
  rd = cam.grid()
  floor_y, wall_z, floor_fn, wall_fn = background
  # The camera is level, so whether a pixel sees the floor (y = floor_y) or the wall (z = wall_z)
  # depends only on its row, and the floor's z-depth is constant along a row (rd_z = 1).
  row_y = rd[:, 0, 1]
  first_floor = int(np.searchsorted(row_y > floor_y / wall_z, True)) if floor_y > 0 else h
  depth = np.empty((h, w), np.float32)
  rgb = np.empty((h, w, 3), np.float32)
  depth[:first_floor] = wall_z
  depth[first_floor:] = (floor_y / row_y[first_floor:])[:, None]
  for rows in (slice(0, first_floor), slice(first_floor, h)):
    n = rows.stop - rows.start
    if n > 0:
      pts = (rd[rows] * depth[rows, :, None]).reshape(-1, 3)
      fn = wall_fn if rows.start == 0 else floor_fn
      rgb[rows] = fn(pts).reshape(n, w, 3)
  prim = np.full((h, w), -1, np.int16)
  normal = np.zeros((h, w, 3), np.float32)

  def composite(pid, box, t, color_fn):
    """color_fn(selected pixels) -> (colors (N, 3), unit normals (N, 3))."""
    y0, y1, x0, x1 = box
    z = t.reshape(y1 - y0, x1 - x0)             # rd_z = 1: t is z-depth
    win = z < depth[y0:y1, x0:x1]
    if not win.any():
      return
    depth[y0:y1, x0:x1][win] = z[win]
    prim[y0:y1, x0:x1][win] = pid
    rgb[y0:y1, x0:x1][win], normal[y0:y1, x0:x1][win] = color_fn(win.reshape(-1))

  for i, (pa, pb, r, color) in enumerate(capsules):
    box = _bbox(cam, np.stack([pa, pb]), r)
    if box is None:
      continue
    y0, y1, x0, x1 = box
    d = rd[y0:y1, x0:x1].reshape(-1, 3)
    t = _capsule_t(d, pa, pb, r)

    def color_fn(sel, d=d, t=t, pa=pa, pb=pb, color=color):
      p = d[sel] * t[sel, None]
      n = _capsule_normal(p, pa, pb)
      shade = 0.45 + 0.55 * np.clip(n @ light, 0, 1)
      return np.asarray(color, np.float32)[None] * shade[:, None], n
    composite(i, box, t, color_fn)

  for j, (center, rot, radii, shade_fn) in enumerate(ellipsoids):
    box = _bbox(cam, center[None], float(np.max(radii)))
    if box is None:
      continue
    y0, y1, x0, x1 = box
    d = rd[y0:y1, x0:x1].reshape(-1, 3)
    t, local = _ellipsoid_t(d, center, rot, radii)

    def color_fn(sel, local=local, rot=rot, radii=radii, shade_fn=shade_fn):
      loc = local[sel]
      n = (loc / radii) @ rot.T
      n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
      shade = 0.45 + 0.55 * np.clip(n @ light, 0, 1)
      return shade_fn(loc) * shade[:, None], n
    composite(len(capsules) + j, box, t, color_fn)
  return Frame(np.clip(rgb, 0, 1), depth, prim, normal)
