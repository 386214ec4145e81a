"""A user's image as the image-to-video pipelines take it: `preprocess_image` (resize to the frame
size as diffusers' image processors do, pixels in [-1, 1]), `pixels_at_own_size` (the same scale
without resizing: SVD's CLIP branch, HJB's reference face), `fit_to_aspect`, and
`condition_frames` (per-frame condition images: skeletons, dense pose maps).

The pipelines resize their input straight to (height, width) as diffusers does, which stretches an
image of another aspect ratio. `fit_to_aspect` first brings the image to the target's aspect:
'crop' (default: the centered largest region of that aspect), 'pad' (the whole image centered on
black bars) or 'stretch' (nothing: the diffusers behaviour). It says what it did in one line.
"""
import numpy as np

FITS = ("crop", "pad", "stretch")


def fit_to_aspect(image, height: int, width: int, fit: str = "crop"):
  """(PIL image of aspect width:height, a one-line note of what was done, or '' if nothing)."""
  from PIL import Image
  if fit not in FITS:
    raise ValueError(f"image fit {fit!r}: expected one of {', '.join(FITS)}")
  w, h = image.size
  if w * height == h * width or fit == "stretch":
    note = "" if w * height == h * width else (
        f"image {w}x{h} stretched to the {width}x{height} frames (image_fit='stretch')")
    return image, note
  if fit == "crop":
    if w * height > h * width:                  # wider than the target: crop the sides
      cw, ch = round(h * width / height), h
    else:
      cw, ch = w, round(w * height / width)
    left, top = (w - cw) // 2, (h - ch) // 2
    out = image.crop((left, top, left + cw, top + ch))
    return out, (f"image {w}x{h} center-cropped to {cw}x{ch} (the {width}:{height} aspect of the "
                 "frames; image_fit='pad' keeps it whole)")
  if w * height > h * width:                    # pad: bars above and below
    pw, ph = w, round(w * height / width)
  else:
    pw, ph = round(h * width / height), h
  out = Image.new("RGB", (pw, ph))
  out.paste(image, ((pw - w) // 2, (ph - h) // 2))
  return out, (f"image {w}x{h} padded to {pw}x{ph} with black bars (the {width}:{height} aspect "
               "of the frames)")


def preprocess_image(image, height: int, width: int) -> np.ndarray:
  """PIL image, (H, W, 3) uint8, or float in [0, 1] -> (H', W', 3) float32 in [-1, 1].

  PIL and uint8 inputs are resized with PIL Lanczos exactly as diffusers' VaeImageProcessor does;
  a float array must already have the target size.
  """
  from PIL import Image
  if isinstance(image, Image.Image):
    image = image.convert("RGB")
    if image.size != (width, height):
      image = image.resize((width, height), resample=Image.LANCZOS)
    arr = np.asarray(image).astype(np.float32) / 255.0
  else:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
      raise ValueError(f"image of shape {arr.shape}: expected (H, W, 3)")
    if arr.dtype == np.uint8:
      return preprocess_image(Image.fromarray(arr), height, width)
    if arr.shape[:2] != (height, width):
      raise ValueError(f"float image of size {arr.shape[:2]}: expected ({height}, {width}); pass a "
                       "PIL image or uint8 array to have it resized")
    arr = arr.astype(np.float32)
  return 2.0 * arr - 1.0


def pixels_at_own_size(image) -> np.ndarray:
  """PIL image or (H, W, 3) uint8 (or float in [0, 1]) at its own size -> float32 in [-1, 1]."""
  from PIL import Image
  if isinstance(image, Image.Image):
    arr = np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
  else:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
      raise ValueError(f"image of shape {arr.shape}: expected (H, W, 3)")
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
  return 2.0 * arr - 1.0


def condition_frames(frames, height: int, width: int, what: str = "condition images") -> np.ndarray:
  """Condition images (F, H, W, 3) uint8 (or a list of (H, W, 3) / PIL images) -> (F, H, W, 3)
  float32 in [-1, 1] (x / 127.5 - 1, as StableAnimator's poses); they must already be height x
  width."""
  arr = np.stack([np.asarray(p.convert("RGB") if hasattr(p, "convert") else p) for p in frames])
  if arr.ndim != 4 or arr.shape[1:] != (height, width, 3):
    raise ValueError(f"{what} of shape {arr.shape}: expected (F, {height}, {width}, 3), the "
                     "output size (draw or resize them at it)")
  return arr.astype(np.float32) / 127.5 - 1.0
