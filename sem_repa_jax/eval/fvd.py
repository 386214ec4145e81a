"""Frechet distances of videos: FVD (Unterthiner et al. 2018) and FID-VID, on I3D features of clips.

Both cut every video into clips of `length` frames (16, as StyleGAN-V, the original TF FVD and
DisCo use) starting every `stride` frames (16: non-overlapping windows from frame 0; a tail shorter
than a clip is left out), run I3D (models/metrics/i3d.py: Kinetics-400, frames resized to 224x224
with values in [-1, 1]) on each clip, fit one Gaussian per set over all clips of all videos and
take the Frechet distance of eval/fid.py. They differ in the I3D layer they read:

- FVD: the 400 logits (pre-softmax, averaged over time). The TF FVD of Unterthiner et al. embeds
  clips with the TF-Hub i3d-kinetics-400 module, whose output is these logits, and StyleGAN-V's
  torchscript detector (return_features=True) returns the same 400-d vector; common FVD numbers
  are on this layer.
- FID-VID: the 1024-d average pool before the logits (piergiaj's `extract_features`, averaged over
  time). DisCo brought FID-VID to the animation papers (MagicAnimate and later papers follow its
  evaluation); DisCo's metric code computes it on the pooled features of a Kinetics 3D ResNet-50
  (its 'FVD-3DRN50'), whose weights we do not have. We take the pooled features of the same kind of
  network we have, the feature layer (not the class scores) as FID itself does, so FID-VID here is
  "FID on I3D pool features": the protocol of DisCo's, not its numbers (docs/evaluation.md).
"""
import numpy as np

CLIP_LENGTH = 16
CLIP_STRIDE = 16
LAYER = {"fvd": "logits", "fid_vid": "pool"}   # metric -> I3D output (models/metrics/i3d.py)


def clip_starts(frames: int, length: int = CLIP_LENGTH, stride: int = CLIP_STRIDE,
                name: str = "video") -> list:
  """First frame of each clip of a video of `frames` frames; an error if not one clip fits."""
  if length < 1 or stride < 1:
    raise ValueError(f"clip length {length} and stride {stride} must be >= 1")
  if frames < length:
    raise ValueError(f"{name}: {frames} frames, fewer than one clip of {length} "
                     "(config.evaluate.clip_length) for FVD / FID-VID")
  return list(range(0, frames - length + 1, stride))


def clips_of(video: np.ndarray, length: int = CLIP_LENGTH, stride: int = CLIP_STRIDE,
             name: str = "video") -> np.ndarray:
  """(N, length, H, W, C) clips of a (F, H, W, C) video, see `clip_starts`."""
  return np.stack([video[s:s + length] for s in clip_starts(len(video), length, stride, name)])
