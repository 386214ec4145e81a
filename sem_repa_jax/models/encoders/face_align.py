"""Face crops for ArcFace: 5-point similarity alignment to the ArcFace 112x112 template (as
insightface's norm_crop) and box crops resized to 112 (as StableAnimator's HJB face step).

Conventions: images channels-last (B, H, W, C); pixel (x, y) has its center at integer coordinates
(OpenCV's convention); landmarks are (x, y) in the order left eye, right eye, nose, left mouth
corner, right mouth corner (of the image, as SCRFD outputs them). Affine matrices are (2, 3) and map
source-image coordinates to crop coordinates, like the M of cv2.warpAffine.

The warps are JAX, usable inside jit and differentiable w.r.t. the images (and the boxes'
sampling positions are computed from traced values), so they can sit between a VAE decoder and
ArcFace in a loss.
"""
import jax.numpy as jnp
import numpy as np

# insightface utils/face_align.py `arcface_dst`: where the 5 landmarks land in a 112x112 crop.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def umeyama(src, dst, estimate_scale: bool = True) -> np.ndarray:
  """(3, 3) least-squares similarity transform taking points src (N, 2) to dst (N, 2).

  Umeyama (1991), as skimage.transform.SimilarityTransform.estimate, including its handling of
  reflections and of degenerate (rank-deficient) point sets.
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
    raise ValueError(f"umeyama: src {src.shape} and dst {dst.shape} must both be (N, 2)")
  num, dim = src.shape
  src_mean, dst_mean = src.mean(0), dst.mean(0)
  src_d, dst_d = src - src_mean, dst - dst_mean
  a = dst_d.T @ src_d / num
  d = np.ones(dim)
  if np.linalg.det(a) < 0:
    d[dim - 1] = -1
  t = np.eye(dim + 1)
  u, s, vt = np.linalg.svd(a)
  rank = np.linalg.matrix_rank(a)
  if rank == 0:
    raise ValueError("umeyama: all source points coincide; no similarity transform exists")
  if rank == dim - 1:
    if np.linalg.det(u) * np.linalg.det(vt) > 0:
      t[:dim, :dim] = u @ vt
    else:
      dd = d.copy()
      dd[dim - 1] = -1
      t[:dim, :dim] = u @ np.diag(dd) @ vt
  else:
    t[:dim, :dim] = u @ np.diag(d) @ vt
  scale = (s @ d) / src_d.var(0).sum() if estimate_scale else 1.0
  t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
  t[:dim, :dim] *= scale
  return t


def umeyama_jax(src, dst):
  """Batched (..., N, 2) -> (..., 2, 3) similarity, traceable; the full-rank case of `umeyama`
  (any 5 face landmarks that are not collinear)."""
  src, dst = jnp.asarray(src, jnp.float32), jnp.asarray(dst, jnp.float32)
  src_mean, dst_mean = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
  src_d, dst_d = src - src_mean, dst - dst_mean
  a = jnp.swapaxes(dst_d, -1, -2) @ src_d / src.shape[-2]
  u, s, vt = jnp.linalg.svd(a)
  d = jnp.stack([jnp.ones_like(s[..., 0]), jnp.sign(jnp.linalg.det(a))], -1)
  d = jnp.where(d == 0, 1.0, d)
  r = (u * d[..., None, :]) @ vt
  scale = jnp.sum(s * d, -1) / jnp.sum(jnp.var(src_d, -2), -1)
  rs = r * scale[..., None, None]
  shift = dst_mean[..., 0, :] - jnp.einsum("...ij,...j->...i", rs, src_mean[..., 0, :])
  return jnp.concatenate([rs, shift[..., None]], -1)


def template(image_size: int = 112) -> np.ndarray:
  """The ArcFace template for a crop of image_size (insightface: 112k scales it, 128k also shifts
  x by 8 * size / 128)."""
  if image_size % 112 == 0:
    ratio, dx = image_size / 112.0, 0.0
  elif image_size % 128 == 0:
    ratio = image_size / 128.0
    dx = 8.0 * ratio
  else:
    raise ValueError(f"ArcFace crop size {image_size}: must be a multiple of 112 or 128")
  dst = ARCFACE_TEMPLATE.astype(np.float64) * ratio
  dst[:, 0] += dx
  return dst


def estimate_norm(landmarks, image_size: int = 112) -> np.ndarray:
  """(2, 3) matrix taking the image to the aligned crop (insightface face_align.estimate_norm)."""
  landmarks = np.asarray(landmarks, np.float64)
  if landmarks.shape != (5, 2):
    raise ValueError(f"landmarks of shape {landmarks.shape}: expected (5, 2) (x, y) points")
  return umeyama(landmarks, template(image_size))[:2]


def _bilinear(images, xs, ys, clamp=None, origin=None):
  """images (B, H, W, C); xs, ys (B, h, w) source coordinates -> (B, h, w, C).

  Without clamp, neighbors outside the image count as 0 (cv2 BORDER_CONSTANT, value 0). With clamp
  = (x_hi, y_hi) (B,) integer bounds, coordinates are clamped into [0, hi] first, which is how a
  resize of an already-cut crop treats its borders. origin = (ox, oy) (B,) integers: xs, ys are
  relative to it (kept small so float32 keeps the fractions exact).
  """
  b, h, w, c = images.shape
  if clamp is not None:
    x_hi, y_hi = (v[:, None, None].astype(xs.dtype) for v in clamp)
    xs, ys = jnp.clip(xs, 0.0, x_hi), jnp.clip(ys, 0.0, y_hi)
  x0, y0 = jnp.floor(xs), jnp.floor(ys)
  fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  if origin is not None:
    x0, y0 = x0 + origin[0][:, None, None], y0 + origin[1][:, None, None]
  flat = images.reshape(b, h * w, c)

  def tap(yi, xi):
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
    v = jnp.take_along_axis(flat, idx.reshape(b, -1, 1), axis=1).reshape(*idx.shape, c)
    return jnp.where(inside[..., None], v, jnp.zeros((), images.dtype))

  top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
  bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
  return (top * (1 - fy) + bottom * fy).astype(images.dtype)


def warp_affine(images, matrices, size: int = 112):
  """cv2.warpAffine(image, M, (size, size)) with bilinear sampling and a black border, batched.

  images (B, H, W, C) float; matrices (B, 2, 3) image -> crop. Returns (B, size, size, C).
  """
  m = jnp.asarray(matrices, jnp.float32)
  full = jnp.concatenate([m, jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), m[..., :1, :].shape)], -2)
  inv = jnp.linalg.inv(full)[..., :2, :]
  grid = jnp.arange(size, dtype=jnp.float32)
  u, v = jnp.meshgrid(grid, grid)   # u: x (column), v: y (row)
  xs = inv[:, 0, 0, None, None] * u + inv[:, 0, 1, None, None] * v + inv[:, 0, 2, None, None]
  ys = inv[:, 1, 0, None, None] * u + inv[:, 1, 1, None, None] * v + inv[:, 1, 2, None, None]
  return _bilinear(images, xs, ys)


def norm_crop(images, landmarks, size: int = 112):
  """Aligned ArcFace crops: images (B, H, W, C), landmarks (B, 5, 2) -> (B, size, size, C).

  With numpy landmarks the transform is estimated as insightface does (numpy, float64); with traced
  landmarks (inside jit) `umeyama_jax` is used.
  """
  if isinstance(landmarks, np.ndarray):
    m = np.stack([estimate_norm(l, size) for l in landmarks]).astype(np.float32)
  else:
    m = umeyama_jax(landmarks, jnp.asarray(template(size), jnp.float32))
  return warp_affine(images, m, size)


def box_from_mask(mask):
  """mask (B, H, W) (nonzero = face) -> (boxes (B, 4) int32 [x1, y1, x2, y2), present (B,) bool).

  The box is the tight bound of the mask, end-exclusive. Frames with an empty mask get the whole
  frame as box and present=False: callers must drop them, not embed them.
  """
  m = jnp.asarray(mask) != 0
  b, h, w = m.shape
  rows, cols = m.any(2), m.any(1)
  present = rows.any(1)
  y1, y2 = jnp.argmax(rows, 1), h - jnp.argmax(rows[:, ::-1], 1)
  x1, x2 = jnp.argmax(cols, 1), w - jnp.argmax(cols[:, ::-1], 1)
  boxes = jnp.stack([x1, y1, x2, y2], 1).astype(jnp.int32)
  full = jnp.array([0, 0, w, h], jnp.int32)
  return jnp.where(present[:, None], boxes, full), present


def crop_resize(images, boxes, size: int = 112):
  """Crops images[b, y1:y2, x1:x2] and resizes it bilinearly to (size, size).

  Equal to torch.nn.functional.interpolate(crop, (size, size), mode='bilinear',
  align_corners=False) of each cut crop (half-pixel centers, edges clamped to the crop), but in
  one gather, jittable with traced integer boxes (B, 4) [x1, y1, x2, y2) and differentiable w.r.t.
  the images.
  """
  boxes = jnp.asarray(boxes).astype(jnp.int32)
  x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
  x2, y2 = jnp.maximum(x2, x1 + 1), jnp.maximum(y2, y1 + 1)
  grid = jnp.arange(size, dtype=jnp.float32) + 0.5
  sx = (x2 - x1).astype(jnp.float32) / size
  sy = (y2 - y1).astype(jnp.float32) / size
  # align_corners=False clamps negative source coordinates to 0 before interpolating.
  xs = jnp.maximum(grid[None] * sx[:, None] - 0.5, 0.0)
  ys = jnp.maximum(grid[None] * sy[:, None] - 0.5, 0.0)
  b = images.shape[0]
  xs = jnp.broadcast_to(xs[:, None, :], (b, size, size))
  ys = jnp.broadcast_to(ys[:, :, None], (b, size, size))
  return _bilinear(images, xs, ys, clamp=(x2 - x1 - 1, y2 - y1 - 1), origin=(x1, y1))


def to_arcface_input(pixels_uint8):
  """uint8 RGB (…, 112, 112, 3) -> float32 in [-1, 1] as insightface feeds it: (x - 127.5) / 127.5."""
  return (jnp.asarray(pixels_uint8, jnp.float32) - 127.5) / 127.5
