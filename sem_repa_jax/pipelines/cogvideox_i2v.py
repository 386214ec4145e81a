"""CogVideoX image-to-video: one image and prompt embeddings -> a video, as diffusers'
CogVideoXImageToVideoPipeline does it, with the whole denoising loop compiled once.

Stages (each a few lines below):
1. image: resized on the host (PIL Lanczos, as diffusers' VaeImageProcessor), scaled to [-1, 1];
2. image latent: the VAE encodes it as ONE frame, the posterior is sampled with explicit noise,
   multiplied by the VAE scaling factor (divided, for CogVideoX 1.5's invert_scale_latents), and
   followed by zero latent frames;
3. sampling: noisy latents concatenated with the image latents on channels, the transformer's
   v-prediction combined by classifier-free guidance ([uncond, cond] batch) and read as x0, DDIM or
   DPM++(2M) SDE steps in one lax.scan (sem_repa_jax.diffusion.samplers);
4. decode: latents divided by the scaling factor, VAE-decoded to pixels in [-1, 1].

Models are passed in as (module, variables) following the project interfaces:
transformer.apply(v, latents (B,F,h,w,C), text (B,L,D), timestep (B,), ofs=None) and
vae.apply(v, video, method='encode') -> (mean, logvar), vae.apply(v, latents, method='decode').
Latents stay float32 through the loop whatever the model dtype (diffusers casts them to the prompt
dtype after every step; in float32 the two agree).

`generate_long` is our extension (not in diffusers): several windows, each conditioned on the last
frame of the previous one (docs/sampling.md). So is `settings.hjb`: StableAnimator's HJB face
optimization (diffusion/hjb.py) on the x0 of the chosen steps, through this VAE's decoder and a
face embedder (face_embedder=), towards the conditioning image's face (face masks of the frames
and of the image given to __call__).
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import guidance, samplers, schedules
from sem_repa_jax.diffusion.hjb import HJBConfig
from sem_repa_jax.diffusion.parameterization import Preconditioning
from sem_repa_jax.pipelines import face_refinement
from sem_repa_jax.pipelines.images import pixels_at_own_size, preprocess_image  # noqa: F401


@dataclasses.dataclass(frozen=True)
class ModelFacts:
  """What the pipeline must know about the two models (diffusers reads these from their configs)."""
  latent_channels: int = 16            # transformer in_channels // 2
  vae_scaling_factor: float = 0.7      # 2b 1.15258426; 5b, 5b-I2V, 1.5: 0.7
  invert_scale_latents: bool = False   # CogVideoX 1.5 divides the image latent by the factor
  patch_size_t: Optional[int] = None   # 1.5: 2 (latent frames padded to a multiple)
  use_ofs: bool = False                # 1.5-I2V: the ofs embedding, called with 2.0
  spatial_compression: int = 8
  temporal_compression: int = 4
  prediction_type: str = "v_prediction"  # the transformer's output (parameterization.PREDICTION_TYPES)


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  height: int = 480
  width: int = 720
  num_frames: int = 49
  num_inference_steps: int = 50
  guidance_scale: float = 6.0
  use_dynamic_cfg: bool = False
  sampler: str = "ddim"                 # 'ddim' (CogVideoXDDIMScheduler) | 'dpm' (CogVideoXDPMScheduler)
  snr_shift_scale: float = 1.0          # 2b: 3.0
  timestep_spacing: str = "trailing"
  hjb: Optional[HJBConfig] = None       # our extension: HJB face optimization (None: off)

  def check(self, facts: ModelFacts):
    s = facts.spatial_compression
    if self.height % s or self.width % s:
      raise ValueError(f"height x width = {self.height} x {self.width}: both must be multiples of the "
                       f"VAE's spatial compression {s}")
    if self.num_frames < 1 or (self.num_frames - 1) % facts.temporal_compression:
      raise ValueError(f"num_frames={self.num_frames}: expected k * {facts.temporal_compression} + 1 "
                       "(e.g. 49)")
    # CogVideoX is trained on a discrete alpha-bar schedule: only those steps can sample it.
    names = samplers.step_names("discrete")
    if self.sampler not in names:
      raise ValueError(f"sampler {self.sampler!r}: expected one of {', '.join(names)}")
    if self.hjb is not None:
      self.hjb.check_steps(self.num_inference_steps)


def latent_frames(settings: SamplingSettings, facts: ModelFacts):
  """(latent frames sampled, leading frames to drop before decoding), as diffusers pads for 1.5."""
  f = (settings.num_frames - 1) // facts.temporal_compression + 1
  extra = 0
  if facts.patch_size_t is not None and f % facts.patch_size_t:
    extra = facts.patch_size_t - f % facts.patch_size_t
  return f + extra, extra


def to_uint8(video) -> np.ndarray:
  """[-1, 1] -> uint8 as diffusers' postprocess: round(clip(x / 2 + 0.5, 0, 1) * 255)."""
  v = np.clip(np.asarray(video, np.float32) / 2 + 0.5, 0, 1)
  return np.round(v * 255).astype(np.uint8)


class CogVideoXImageToVideo:
  """The pipeline; compiled functions are built once per instance and reused across calls."""

  def __init__(self, transformer, transformer_variables, vae, vae_variables, *,
               facts: ModelFacts = ModelFacts(), progress: bool = True, face_embedder=None,
               face_embedder_variables=None):
    self.transformer, self.transformer_variables = transformer, transformer_variables
    self.vae, self.vae_variables = vae, vae_variables
    self.face_embedder, self.face_embedder_variables = face_embedder, face_embedder_variables
    self.facts = facts
    self.progress = samplers.HostProgress("CogVideoX I2V", enabled=progress)
    self._latents_fn = jax.jit(self._latents, static_argnames=(
        "method", "do_cfg", "num_frames", "hjb_config", "extra"))
    self._decode_fn = jax.jit(self._decode)

  # --- stage 2: the image latent -------------------------------------------------------------------
  def encode_image(self, vae_variables, pixels, noise):
    """pixels (B, H, W, 3) in [-1, 1], noise (B, 1, h, w, C) -> scaled latent of the one frame."""
    mean, logvar = self.vae.apply(vae_variables, pixels[:, None], method="encode")
    logvar = jnp.clip(logvar.astype(jnp.float32), -30.0, 20.0)
    latent = mean.astype(jnp.float32) + jnp.exp(0.5 * logvar) * noise
    f = self.facts.vae_scaling_factor
    return latent / f if self.facts.invert_scale_latents else latent * f

  # --- stage 3: the compiled sampling loop ---------------------------------------------------------
  def _latents(self, transformer_variables, vae_variables, pixels, text, latents, image_noise,
               tables, scales, init_noise_sigma, key, face_vars=None, face_targets=None, *,
               method, do_cfg, num_frames, hjb_config=None, extra=0):
    k_lat, k_img, k_loop = jax.random.split(key, 3)
    b, hw = pixels.shape[0], (pixels.shape[1] // self.facts.spatial_compression,
                              pixels.shape[2] // self.facts.spatial_compression)
    c = self.facts.latent_channels
    if latents is None:
      latents = jax.random.normal(k_lat, (b, num_frames, *hw, c), jnp.float32)
    latents = latents * init_noise_sigma   # 1 for CogVideoX's schedulers; kept as diffusers does
    if image_noise is None:
      image_noise = jax.random.normal(k_img, (b, 1, *hw, c), jnp.float32)
    image_latent = self.encode_image(vae_variables, pixels, image_noise)
    b, _, h, w, c = image_latent.shape
    image_latents = jnp.concatenate(
        [image_latent, jnp.zeros((b, num_frames - 1, h, w, c), image_latent.dtype)], axis=1)
    if do_cfg:
      image_latents = jnp.concatenate([image_latents, image_latents], axis=0)
    ofs = jnp.full((image_latents.shape[0],), 2.0, jnp.float32) if self.facts.use_ofs else None

    def denoise(x, pre: Preconditioning, scale):
      x_in = pre.scale_input(x)
      x_in = jnp.concatenate([x_in, x_in], axis=0) if do_cfg else x_in
      x_in = jnp.concatenate([x_in, image_latents], axis=-1)
      t_b = jnp.full((x_in.shape[0],), pre.timestep, jnp.int32)
      out = self.transformer.apply(transformer_variables, x_in, text, t_b, ofs=ofs)
      out = out.astype(jnp.float32)
      if do_cfg:
        uncond, cond = jnp.split(out, 2, axis=0)
        out = guidance.classifier_free_guidance(uncond, cond, scale)
      # Guidance is linear in the output and x0 is affine in it at fixed x: combining raw outputs
      # and converting equals converting and combining.
      return pre.to_x0(x, out)

    refine = face_refinement.refine_hook(
        hjb_config, tables[0].shape[0], face_targets,
        decode=lambda z: self._decode(vae_variables, z[None, extra:])[0],
        embed=lambda faces: self.face_embedder.apply(face_vars, faces))
    x, _ = samplers.sample_loop(denoise, latents, tables, method=method,
                                guidance_scales=scales, key=k_loop, refine_x0=refine,
                                progress=self.progress if self.progress.enabled else None)
    return x

  # --- stage 4: decode -----------------------------------------------------------------------------
  def _decode(self, vae_variables, latents):
    video = self.vae.apply(vae_variables, latents / self.facts.vae_scaling_factor, method="decode")
    return video.astype(jnp.float32)

  def decode(self, latents):
    return self._decode_fn(self.vae_variables, latents)

  def plan(self, settings: SamplingSettings):
    """(sampler plan, per-step guidance scales, the training schedule's alpha-bar table)."""
    ab = schedules.cogvideox_alphas_cumprod(settings.snr_shift_scale)
    plan = samplers.make_plan(settings.sampler, ab, settings.num_inference_steps,
                              timestep_spacing=settings.timestep_spacing,
                              prediction_type=self.facts.prediction_type)
    scales = guidance.guidance_scales(plan.timesteps, settings.guidance_scale,
                                      use_dynamic_cfg=settings.use_dynamic_cfg)
    return plan, scales, ab

  def __call__(self, image, prompt_embeds, negative_prompt_embeds=None, *, key,
               settings: SamplingSettings = SamplingSettings(), latents=None, image_noise=None,
               decode: bool = True, face_masks=None, reference_face_mask=None) -> dict:
    """Generates B videos.

    image: one PIL image / (H, W, 3) array, or a sequence of B of them.
    prompt_embeds: (B, L, D) T5 embeddings; negative_prompt_embeds the same (needed when
      guidance_scale > 1, e.g. the embedding of "").
    key: jax PRNG key, split into (initial noise, posterior noise, sampler noise).
    latents: optional initial noise (B, F_lat, h, w, C); image_noise: optional posterior noise
      (B, 1, h, w, C) (both for tests and reproducibility across frameworks).
    face_masks (F, H, W) of the wanted face in every frame and reference_face_mask (H0, W0) of
      the image at its own size: with settings.hjb (one image; its face is the target).
    Returns dict(latents=(B, F_lat, h, w, C) final latents, video=(B, F, H, W, 3) in [-1, 1]).
    """
    facts = self.facts
    settings.check(facts)
    images = [image] if not isinstance(image, (list, tuple)) else list(image)
    pixels = np.stack([preprocess_image(im, settings.height, settings.width) for im in images])
    prompt_embeds = jnp.asarray(prompt_embeds)
    b = pixels.shape[0]
    if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != b:
      raise ValueError(f"prompt_embeds of shape {prompt_embeds.shape}: expected ({b}, L, D) for {b} "
                       "image(s)")
    do_cfg = settings.guidance_scale > 1.0
    if do_cfg:
      if negative_prompt_embeds is None:
        raise ValueError("guidance_scale > 1 needs negative_prompt_embeds (e.g. the T5 embedding of "
                         "the empty prompt), shaped like prompt_embeds")
      negative_prompt_embeds = jnp.asarray(negative_prompt_embeds, prompt_embeds.dtype)
      if negative_prompt_embeds.shape != prompt_embeds.shape:
        raise ValueError(f"negative_prompt_embeds of shape {negative_prompt_embeds.shape}: expected "
                         f"{prompt_embeds.shape} like prompt_embeds")
      text = jnp.concatenate([negative_prompt_embeds, prompt_embeds], axis=0)
    else:
      text = prompt_embeds
    f_lat, extra = latent_frames(settings, facts)
    h, w = settings.height // facts.spatial_compression, settings.width // facts.spatial_compression
    shape = (b, f_lat, h, w, facts.latent_channels)
    if latents is not None:
      latents = _checked(latents, shape, "latents")
    if image_noise is not None:
      image_noise = _checked(image_noise, (b, 1, h, w, facts.latent_channels), "image_noise")
    targets = None
    if settings.hjb is not None:
      if b != 1:
        raise ValueError(f"HJB takes one image per call, got {b}")
      targets = face_refinement.face_targets(
          settings.hjb, self.face_embedder, self.face_embedder_variables, face_masks=face_masks,
          num_frames=settings.num_frames, height=settings.height, width=settings.width,
          reference_image=pixels_at_own_size(images[0]),
          reference_face_mask=reference_face_mask)
    plan, scales, _ = self.plan(settings)
    out = self.progress.run(plan.num_steps, self._latents_fn, self.transformer_variables,
                            self.vae_variables, jnp.asarray(pixels), text, latents, image_noise,
                            plan.arrays(), jnp.asarray(scales, jnp.float32),
                            np.float32(plan.init_noise_sigma), key, self.face_embedder_variables,
                            targets, method=plan.method, do_cfg=do_cfg, num_frames=f_lat,
                            hjb_config=settings.hjb, extra=extra)
    result = {"latents": out}
    if decode:
      result["video"] = self.decode(out[:, extra:])
    return result

  def generate_long(self, image, prompt_embeds, negative_prompt_embeds=None, *, key,
                    num_windows: int, settings: SamplingSettings = SamplingSettings()) -> dict:
    """Our extension: `num_windows` consecutive windows; window k+1 is conditioned on the last
    decoded frame of window k, whose copy (its first frame) is dropped when joining.

    Returns dict(video=(B, 1 + num_windows * (F - 1), H, W, 3), windows=[per-window latents]).
    """
    if num_windows < 1:
      raise ValueError(f"num_windows={num_windows}: expected >= 1")
    videos, all_latents = [], []
    cond = image
    for k, wkey in enumerate(jax.random.split(key, num_windows)):
      out = self(cond, prompt_embeds, negative_prompt_embeds, key=wkey, settings=settings)
      video = np.asarray(out["video"])
      videos.append(video if k == 0 else video[:, 1:])
      all_latents.append(out["latents"])
      # The next window starts from this one's last frame, in [0, 1] at the working size.
      last = np.clip(video[:, -1] / 2 + 0.5, 0.0, 1.0)
      cond = [last[i] for i in range(last.shape[0])]
    return {"video": np.concatenate(videos, axis=1), "windows": all_latents}


def _checked(x, shape, name):
  x = jnp.asarray(x, jnp.float32)
  if x.shape != tuple(shape):
    raise ValueError(f"{name} of shape {x.shape}: expected {tuple(shape)} (B, F, h, w, C)")
  return x
