"""SemanticREPA's CLIP text score: how well generated videos match their text descriptions.

"We also utilize average CLIP cosine similarity to assess the alignment between generated videos
and the text descriptions." For each video, every frame is embedded by CLIP's image tower
(get_image_features of a CLIPModel, e.g. openai/clip-vit-large-patch14) and the video's prompt by
its text tower (get_text_features); the score of a frame is the raw cosine similarity of the two
unnormalized embeddings, cos = <i, t> / (|i| |t|), in [-1, 1] (not CLIPScore's 100 * max(cos, 0)
and without logit_scale: the paper's ground-truth row reads 0.2897). A video's score is the mean
over its frames (`text_score`); the reported figure is the mean of those over the videos.

Frames are prepared as CLIPImageProcessor (PIL backend) prepares them (`clip_pixels`, on the host):
resize of the shortest side to the tower's image_size with PIL's bicubic filter, center crop to
image_size x image_size, rescale by 1/255 and normalization with the OpenAI CLIP mean/std. Prompts
go through encoders/tokenize.tokenize_clip (padded and truncated to 77 tokens).
"""
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.models.encoders.clip_preprocess import CLIP_MEAN, CLIP_STD


def _resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
  """(h, w) with the shortest side `size`, the other truncated, as transformers'
  get_resize_output_image_size(default_to_square=False)."""
  if width <= height:
    return int(size * height / width), size
  return size, int(size * width / height)


def clip_pixels(frames_uint8, image_size: int = 224) -> np.ndarray:
  """(..., H, W, 3) uint8 frames -> (..., image_size, image_size, 3) float32 CLIP input, equal to
  CLIPImageProcessor(size={'shortest_edge': S}, crop_size=S)'s pixel_values (channels last)."""
  from PIL import Image
  frames = np.asarray(frames_uint8)
  if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
    raise ValueError(f"frames: expected (..., height, width, 3) uint8 RGB, got {frames.dtype} "
                     f"shape {frames.shape}")
  lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
  new_h, new_w = _resized_shape(h, w, image_size)
  top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
  out = np.empty((int(np.prod(lead)), image_size, image_size, 3), np.float32)
  for i, frame in enumerate(frames.reshape(-1, h, w, 3)):
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), resample=Image.BICUBIC))
    crop = resized[top:top + image_size, left:left + image_size]
    out[i] = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
  out = (out - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
  return out.reshape(*lead, image_size, image_size, 3)


def cosine_similarity(a, b):
  """Cosine of the last axes of a and b (broadcast against each other), float32."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  return jnp.sum(a * b, axis=-1)


def text_score(frame_embeds, text_embeds):
  """(V, F, D) image embeddings of each video's frames and (V, D) embeddings of their prompts ->
  (V,) mean over frames of the raw cosine similarity."""
  if frame_embeds.ndim != 3 or text_embeds.shape != (frame_embeds.shape[0], frame_embeds.shape[2]):
    raise ValueError(f"text_score: expected frame_embeds (videos, frames, dim) and text_embeds "
                     f"(videos, dim), got {frame_embeds.shape} and {text_embeds.shape}")
  return jnp.mean(cosine_similarity(frame_embeds, text_embeds[:, None]), axis=1)


def frame_text_similarity(module, variables, pixels, input_ids, attention_mask=None):
  """(V, F) raw cosine of each frame with its video's prompt, through a CLIPModel
  (models/encoders/clip_model.py; `load_pretrained` of a `python -m conversion clip` folder).

  pixels (V, F, S, S, 3) from `clip_pixels`; input_ids and attention_mask (V, L) from
  tokenize_clip. Jittable with the module closed over:
  `jax.jit(functools.partial(frame_text_similarity, module))`; its mean over axis 1 is
  `text_score`.
  """
  if pixels.ndim != 5 or input_ids.ndim != 2 or input_ids.shape[0] != pixels.shape[0]:
    raise ValueError(f"frame_text_similarity: expected pixels (videos, frames, S, S, 3) and "
                     f"input_ids (videos, length), got {pixels.shape} and {input_ids.shape}")
  v, f = pixels.shape[:2]
  image = module.apply(variables, pixels.reshape(v * f, *pixels.shape[2:]),
                       method="image_features")
  text = module.apply(variables, input_ids, attention_mask, method="text_features")
  return cosine_similarity(image.reshape(v, f, -1), text[:, None])
