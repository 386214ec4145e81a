"""Fitting a user's image to a pipeline's frame size, shared by the image-to-video pipelines.

The pipelines resize their input straight to (height, width) as diffusers does, which stretches an
image of another aspect ratio. `fit_to_aspect` first brings the image to the target's aspect:
'crop' (default: the centered largest region of that aspect), 'pad' (the whole image centered on
black bars) or 'stretch' (nothing: the diffusers behaviour). It says what it did in one line.
"""
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
