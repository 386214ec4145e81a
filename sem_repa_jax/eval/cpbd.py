"""CPBD, the cumulative probability of blur detection (Narvekar & Karam 2011), as the `cpbd` package
(1.0.7) computes it: a no-reference sharpness score in [0, 1] of one grey image, higher is sharper.

Steps, each as cpbd.compute does them on the float64 grey image (values 0..255):
1. Canny edges (skimage.feature.canny with its defaults: Gaussian sigma 1 with zero padding,
   renormalized by the blurred mask; ndimage Sobel gradients; non-maximum suppression with
   bilinear interpolation of the neighbours; hysteresis with thresholds 0.1 and 0.2 over
   8-connected components; the one-pixel border dropped). They pick the edge blocks.
2. Octave's Sobel edges (horizontal derivative of the package's normalized Sobel kernel, squared,
   kept above 2 sqrt(mean), thinned to local maxima along rows or columns). Their widths are
   measured.
3. Marziliano widths at the Sobel edges whose np.gradient angle rounds to 0 or +-180 degrees: the
   run of strictly monotone pixels to the left and to the right of the edge (at most 101 each).
4. In every 64x64 block (whole blocks only) with more than 0.2% Canny edge pixels, each width w
   gives P = 1 - exp(-(w / w_JNB)^3.6), w_JNB = 5 where the block's contrast (max - min) is at
   most 50, else 3; P is bucketed to round(100 P).
5. CPBD = the fraction of all those edges with a bucket below 64 (P < 0.635).

Runs on the host in numpy/scipy: hysteresis needs connected-component labels and every step is
data-dependent, so there is nothing for XLA to fuse. The loops of the package are vectorized; the
results are the package's (tests/eval/test_cpbd.py). Video frames (uint8 RGB) are made grey as PIL's
convert('L') does (ITU-R 601-2 luma, integer rounding), the package's own input path (imread
mode='L'). One difference: an image smaller than one block is an error here, where the package
returns 0.
"""
import numpy as np
import scipy.ndimage as ndi

THRESHOLD = 0.002              # edge pixel fraction that makes a block an edge block
BETA = 3.6
BLOCK = 64
MAX_MARGIN = 100               # the widths' walk stops after 101 steps per side
CANNY_LOW, CANNY_HIGH = 0.1, 0.2
JNB = np.concatenate([5 * np.ones(51), 3 * np.ones(205)])   # just-noticeable width by contrast


def luma(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB (..., H, W, 3) -> uint8 grey (..., H, W), PIL's convert('L') to the bit."""
  f = np.asarray(frames).astype(np.uint32)
  return ((f[..., 0] * 19595 + f[..., 1] * 38470 + f[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _nonmaximum_suppression(isobel, jsobel, magnitude, low):
  """skimage's bilinear non-maximum suppression: magnitude kept at local maxima >= low."""
  i, j, m = isobel[1:-1, 1:-1], jsobel[1:-1, 1:-1], magnitude[1:-1, 1:-1]
  at = lambda dx, dy: magnitude[1 + dx:magnitude.shape[0] - 1 + dx, 1 + dy:magnitude.shape[1] - 1 + dy]
  ai, aj = np.abs(i), np.abs(j)
  cond1 = ((i >= 0) & (j >= 0)) | ((i <= 0) & (j <= 0))
  cond2 = ~cond1 & (((i <= 0) & (j >= 0)) | ((i >= 0) & (j <= 0)))
  with np.errstate(divide="ignore", invalid="ignore"):
    # (weight, first neighbour pair, second pair) of the four cases, in skimage's order.
    cases = [(cond1 & (ai > aj), aj / ai, (at(1, 0), at(1, 1)), (at(-1, 0), at(-1, -1))),
             (cond1 & (ai <= aj), ai / aj, (at(0, 1), at(1, 1)), (at(0, -1), at(-1, -1))),
             (cond2 & (ai < aj), ai / aj, (at(0, 1), at(-1, 1)), (at(0, -1), at(1, -1))),
             (cond2 & (ai >= aj), aj / ai, (at(-1, 0), at(-1, 1)), (at(1, 0), at(1, -1)))]
    keep = np.zeros(m.shape, bool)
    for where, w, (a1, a2), (b1, b2) in cases:
      keep |= where & (a2 * w + a1 * (1.0 - w) <= m) & (b2 * w + b1 * (1.0 - w) <= m)
  out = np.zeros_like(magnitude)
  out[1:-1, 1:-1] = np.where(keep & (m >= low), m, 0.0)
  return out


def canny(image: np.ndarray) -> np.ndarray:
  """skimage.feature.canny(image) with its defaults, for a float64 2-D image (bool edges)."""
  bleed = ndi.gaussian_filter(np.ones_like(image), 1.0, mode="constant") + np.finfo(np.float64).eps
  smoothed = ndi.gaussian_filter(image, 1.0, mode="constant") / bleed
  isobel, jsobel = ndi.sobel(smoothed, axis=0), ndi.sobel(smoothed, axis=1)
  magnitude = np.sqrt(isobel * isobel + jsobel * jsobel)
  low_masked = _nonmaximum_suppression(isobel, jsobel, magnitude, CANNY_LOW)
  low = low_masked > 0
  labels, count = ndi.label(low, np.ones((3, 3), bool))
  if count == 0:
    return low
  good = np.zeros(count + 1, bool)
  good[np.unique(labels[low & (low_masked >= CANNY_HIGH)])] = True
  return good[labels]


def sobel_edges(image: np.ndarray) -> np.ndarray:
  """The package's octave.sobel: thinned vertical-edge map of a float64 2-D image (bool)."""
  h = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64) / 4.0   # skimage HSOBEL_WEIGHTS
  h /= np.sum(np.abs(h))
  strength = np.square(ndi.convolve(image, h.T))
  strength[strength <= 2 * np.sqrt(np.mean(strength))] = 0
  pad = lambda a, axis, side: np.concatenate(
      [np.zeros_like(a.take([0], axis)), a][::side], axis=axis)
  left = pad(strength[:, :-1], 1, 1)
  right = pad(strength[:, 1:], 1, -1)
  up = pad(strength[:-1], 0, 1)
  down = pad(strength[1:], 0, -1)
  return ((strength > left) & (strength > right)) | ((strength > up) & (strength > down))


def _runs(success: np.ndarray, leftward: bool) -> np.ndarray:
  """Per position, how many consecutive True values start there and go left (or right)."""
  w = success.shape[1]
  cols = np.broadcast_to(np.arange(w), success.shape)
  if leftward:   # column 0 is False by construction
    return cols - np.maximum.accumulate(np.where(success, 0, cols), axis=1)
  nxt = np.minimum.accumulate(np.where(success, w - 1, cols)[:, ::-1], axis=1)[:, ::-1]
  return nxt - cols


def marziliano_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
  """The package's marziliano_method: edge widths at the edges (0 elsewhere)."""
  gy, gx = np.gradient(image)
  with np.errstate(divide="ignore", invalid="ignore"):
    angles = np.where(gx != 0, np.arctan2(gy, gx) * (180 / np.pi), 0.0)
  angles = np.where((gx == 0) & (gy == np.pi / 2), 90.0, angles)
  widths = np.zeros(image.shape)
  if not np.any(angles):
    return widths
  q = 45 * np.round(angles / 45)
  h, w = image.shape
  false_col = np.zeros((h, 1), bool)
  rises = image[:, 1:] > image[:, :-1]     # pair (c, c+1) increases
  falls = image[:, 1:] < image[:, :-1]
  width_of = lambda left, right: np.minimum(left, MAX_MARGIN) + np.minimum(right, MAX_MARGIN) + 2
  # gradient angle 0: intensity falls walking left and rises walking right; 180: the reverse.
  w0 = width_of(_runs(np.hstack([false_col, rises]), True)[:, :-2],
                _runs(np.hstack([rises, false_col]), False)[:, 2:])
  w180 = width_of(_runs(np.hstack([false_col, falls]), True)[:, :-2],
                  _runs(np.hstack([falls, false_col]), False)[:, 2:])
  inner = (slice(1, h - 1), slice(1, w - 1))
  e, qi = edges[inner].astype(bool), q[inner]
  widths[inner] = np.where(e & (qi == 0), w0[1:-1], np.where(e & (np.abs(qi) == 180), w180[1:-1], 0))
  return widths


def cpbd(image: np.ndarray) -> float:
  """CPBD of one grey image (H, W), values 0..255 (uint8 or float); see the module docstring."""
  image = np.asarray(image)
  if image.ndim != 2 or image.shape[0] < BLOCK or image.shape[1] < BLOCK:
    raise ValueError(f"cpbd: expected a grey image (H, W) of at least {BLOCK}x{BLOCK}; got shape "
                     f"{image.shape}")
  image = image.astype(np.float64)
  edges, widths = canny(image), marziliano_widths(sobel_edges(image), image)
  probabilities = []
  for r in range(0, image.shape[0] // BLOCK * BLOCK, BLOCK):
    for c in range(0, image.shape[1] // BLOCK * BLOCK, BLOCK):
      block = (slice(r, r + BLOCK), slice(c, c + BLOCK))
      if np.count_nonzero(edges[block]) <= BLOCK * BLOCK * THRESHOLD:
        continue
      bw = widths[block][widths[block] != 0]
      jnb = JNB[int(np.max(image[block]) - np.min(image[block]))]
      probabilities.append(1 - np.exp(-np.abs(bw / jnb) ** BETA))
  p = np.concatenate(probabilities) if probabilities else np.zeros(0)
  if not len(p):
    return 0.0
  return float(np.count_nonzero(np.rint(p * 100) < 64) / len(p))


def cpbd_frames(frames: np.ndarray) -> np.ndarray:
  """CPBD of each uint8 RGB frame (F, H, W, 3) -> (F,) float64, on PIL's 'L' luma."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"cpbd_frames: expected uint8 RGB frames (F, H, W, 3); got {frames.shape}")
  return np.array([cpbd(g) for g in luma(frames)])
