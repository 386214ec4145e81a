"""Pipeline logic against diffusers' CogVideoXImageToVideoPipeline with tiny stand-in models.

The stand-ins (a pooled 1x1 'VAE' and a per-pixel 'transformer' that reads the text and timestep)
are written twice, in torch for diffusers and in Flax for us, from the same numpy weights. Everything
the pipeline itself does is then compared exactly: image preprocessing, posterior sampling and
scaling, zero-frame padding, channel concatenation, the [uncond, cond] batch and CFG (static and
dynamic), the DDIM / DPM schedules, and decoding.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import (CogVideoXDDIMScheduler, CogVideoXDPMScheduler,
                       CogVideoXImageToVideoPipeline)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.autoencoders.vae import DecoderOutput
from PIL import Image

from sem_repa_jax.pipelines import cogvideox_i2v as i2v

C, D, L = 4, 8, 6            # latent channels, text width, text length
H, W, FRAMES = 32, 48, 9     # pixels; 3 latent frames
SF = 0.7

rng = np.random.default_rng(0)
WEIGHTS = {
    "enc": rng.standard_normal((3, 2 * C)).astype(np.float32) * 0.5,
    "enc_b": np.concatenate([np.zeros(C), np.full(C, -2.0)]).astype(np.float32),
    "dec": rng.standard_normal((C, 3)).astype(np.float32) * 0.5,
    "dec_b": rng.standard_normal(3).astype(np.float32) * 0.1,
    "w1": rng.standard_normal((2 * C, C)).astype(np.float32) * 0.5,
    "p": rng.standard_normal((D, C)).astype(np.float32) * 0.5,
}


# --- torch stand-ins (layouts as diffusers: vae (B,C,F,H,W), transformer (B,F,C,h,w)) ---------------
class TorchVAE(ModelMixin, ConfigMixin):
  @register_to_config
  def __init__(self, block_out_channels=(8, 8, 8, 8), temporal_compression_ratio=4,
               scaling_factor=SF, invert_scale_latents=False):
    super().__init__()
    self.enc = torch.nn.Parameter(torch.from_numpy(WEIGHTS["enc"]))
    self.enc_b = torch.nn.Parameter(torch.from_numpy(WEIGHTS["enc_b"]))
    self.dec = torch.nn.Parameter(torch.from_numpy(WEIGHTS["dec"]))
    self.dec_b = torch.nn.Parameter(torch.from_numpy(WEIGHTS["dec_b"]))

  def encode(self, x):
    b, c, f, h, w = x.shape
    pooled = x.reshape(b, c, f, h // 8, 8, w // 8, 8).mean(dim=(4, 6))
    moments = torch.einsum("bcfhw,co->bofhw", pooled, self.enc) + self.enc_b[None, :, None, None, None]
    return AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution(moments))

  def decode(self, z):
    y = torch.tanh(torch.einsum("bcfhw,co->bofhw", z, self.dec) + self.dec_b[None, :, None, None, None])
    y = torch.cat([y[:, :, :1], y[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
    return DecoderOutput(sample=y.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4))


class TorchTransformer(ModelMixin, ConfigMixin, CacheMixin):
  @register_to_config
  def __init__(self, in_channels=2 * C, patch_size_t=None, use_rotary_positional_embeddings=False,
               ofs_embed_dim=None, sample_height=H // 8, sample_width=W // 8, patch_size=2):
    super().__init__()
    self.w1 = torch.nn.Parameter(torch.from_numpy(WEIGHTS["w1"]))
    self.p = torch.nn.Parameter(torch.from_numpy(WEIGHTS["p"]))

  def forward(self, hidden_states, encoder_hidden_states, timestep, ofs=None, image_rotary_emb=None,
              attention_kwargs=None, return_dict=False):
    x = hidden_states.permute(0, 1, 3, 4, 2)
    y = torch.tanh(x @ self.w1) * (1 + timestep.float() / 1000)[:, None, None, None, None]
    y = y + (encoder_hidden_states.mean(1) @ self.p)[:, None, None, None, :]
    return (y.permute(0, 1, 4, 2, 3),)


# --- the same in Flax, channels-last, with the project interfaces --------------------------------
class FlaxVAE(nn.Module):
  def setup(self):
    self.enc = self.param("enc", lambda k: jnp.asarray(WEIGHTS["enc"]))
    self.enc_b = self.param("enc_b", lambda k: jnp.asarray(WEIGHTS["enc_b"]))
    self.dec = self.param("dec", lambda k: jnp.asarray(WEIGHTS["dec"]))
    self.dec_b = self.param("dec_b", lambda k: jnp.asarray(WEIGHTS["dec_b"]))

  def encode(self, video):
    b, f, h, w, c = video.shape
    pooled = video.reshape(b, f, h // 8, 8, w // 8, 8, c).mean(axis=(3, 5))
    moments = pooled @ self.enc + self.enc_b
    return moments[..., :C], moments[..., C:]

  def decode(self, z):
    y = jnp.tanh(z @ self.dec + self.dec_b)
    y = jnp.concatenate([y[:, :1], jnp.repeat(y[:, 1:], 4, axis=1)], axis=1)
    return jnp.repeat(jnp.repeat(y, 8, axis=2), 8, axis=3)

  def __call__(self, video):
    return self.decode(self.encode(video)[0])


class FlaxTransformer(nn.Module):
  @nn.compact
  def __call__(self, latents, text_embeds, timestep, ofs=None):
    w1 = self.param("w1", lambda k: jnp.asarray(WEIGHTS["w1"]))
    p = self.param("p", lambda k: jnp.asarray(WEIGHTS["p"]))
    y = jnp.tanh(latents @ w1) * (1 + timestep.astype(jnp.float32) / 1000)[:, None, None, None, None]
    return y + (text_embeds.mean(1) @ p)[:, None, None, None, :]


@pytest.fixture(scope="module")
def pipes():
  vae, tr = FlaxVAE(), FlaxTransformer()
  vv = vae.init(jax.random.key(0), jnp.zeros((1, 1, H, W, 3)))
  tv = tr.init(jax.random.key(0), jnp.zeros((1, 3, H // 8, W // 8, 2 * C)), jnp.zeros((1, L, D)),
               jnp.zeros((1,), jnp.int32))
  ours = i2v.CogVideoXImageToVideo(tr, tv, vae, vv, progress=False,
                                   facts=i2v.ModelFacts(latent_channels=C, vae_scaling_factor=SF))
  return ours, TorchVAE().eval(), TorchTransformer().eval()


def _reference(tvae, ttr, scheduler, image, pos, neg, latents, seed, guidance, dynamic):
  pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=tvae, transformer=ttr,
                                       scheduler=scheduler)
  pipe.set_progress_bar_config(disable=True)
  out = pipe(image=image, prompt_embeds=torch.from_numpy(pos), negative_prompt_embeds=torch.from_numpy(neg),
             height=H, width=W, num_frames=FRAMES, num_inference_steps=5, guidance_scale=guidance,
             use_dynamic_cfg=dynamic, latents=torch.from_numpy(latents).permute(0, 1, 4, 2, 3),
             generator=torch.Generator().manual_seed(seed), output_type="latent", return_dict=False)
  return out[0].permute(0, 1, 3, 4, 2).numpy()


def _scheduler(cls):
  return cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
             num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
             set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing", snr_shift_scale=1.0)


def _inputs(seed):
  r = np.random.default_rng(seed)
  image = Image.fromarray(r.integers(0, 256, (40, 56, 3), dtype=np.uint8))  # resized by both
  pos = r.standard_normal((1, L, D)).astype(np.float32)
  neg = r.standard_normal((1, L, D)).astype(np.float32)
  latents = r.standard_normal((1, 3, H // 8, W // 8, C)).astype(np.float32)
  # The posterior noise diffusers draws from its generator (the first draw, NCFHW).
  noise = torch.randn((1, C, 1, H // 8, W // 8), generator=torch.Generator().manual_seed(seed))
  return image, pos, neg, latents, noise.permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize("dynamic", [False, True])
def test_ddim_with_guidance_matches_diffusers(pipes, dynamic):
  ours, tvae, ttr = pipes
  image, pos, neg, latents, noise = _inputs(1)
  ref = _reference(tvae, ttr, _scheduler(CogVideoXDDIMScheduler), image, pos, neg, latents, 1,
                   6.0, dynamic)
  settings = i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES, num_inference_steps=5,
                                  guidance_scale=6.0, use_dynamic_cfg=dynamic)
  out = ours(image, pos, neg, key=jax.random.key(0), settings=settings, latents=latents,
             image_noise=noise, decode=True)
  err = float(np.max(np.abs(np.asarray(out["latents"]) - ref)))
  assert err <= 1e-5, err
  # Decoding: diffusers' decode_latents on the same latents.
  with torch.no_grad():
    video = tvae.decode(torch.from_numpy(ref).permute(0, 4, 1, 2, 3) / SF).sample
  np.testing.assert_allclose(out["video"], video.permute(0, 2, 3, 4, 1).numpy(), atol=1e-5)
  assert out["video"].shape == (1, FRAMES, H, W, 3)


def test_dpm_first_order_path_and_no_guidance_match_diffusers(pipes):
  # One DPM step has no second-order term and its noise is multiplied by zero (last step), so the
  # result is comparable without sharing the sampler noise; guidance 1 takes the no-CFG path.
  ours, tvae, ttr = pipes
  image, pos, neg, latents, noise = _inputs(2)
  pipe = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=tvae, transformer=ttr,
                                       scheduler=_scheduler(CogVideoXDPMScheduler))
  pipe.set_progress_bar_config(disable=True)
  ref = pipe(image=image, prompt_embeds=torch.from_numpy(pos), height=H, width=W, num_frames=FRAMES,
             num_inference_steps=1, guidance_scale=1.0,
             latents=torch.from_numpy(latents).permute(0, 1, 4, 2, 3),
             generator=torch.Generator().manual_seed(2), output_type="latent",
             return_dict=False)[0].permute(0, 1, 3, 4, 2).numpy()
  settings = i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES, num_inference_steps=1,
                                  guidance_scale=1.0, sampler="dpm")
  out = ours(image, pos, key=jax.random.key(0), settings=settings, latents=latents,
             image_noise=noise, decode=False)
  np.testing.assert_allclose(out["latents"], ref, atol=1e-5)


def test_inputs_are_checked(pipes):
  ours = pipes[0]
  image, pos, neg, latents, noise = _inputs(3)
  s = i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES, num_inference_steps=2)
  with pytest.raises(ValueError, match="negative_prompt_embeds"):
    ours(image, pos, key=jax.random.key(0), settings=s)
  with pytest.raises(ValueError, match="latents of shape"):
    ours(image, pos, neg, key=jax.random.key(0), settings=s, latents=latents[:, :2])
  with pytest.raises(ValueError, match="num_frames=8"):
    ours(image, pos, neg, key=jax.random.key(0),
         settings=i2v.SamplingSettings(height=H, width=W, num_frames=8))


def test_sliding_window_conditions_each_window_on_the_last_frame(pipes):
  ours = pipes[0]
  image, pos, neg, _, _ = _inputs(4)
  # Same step count and guidance as the DDIM test: the compiled loop is reused.
  s = i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES, num_inference_steps=5,
                           guidance_scale=6.0)
  out = ours.generate_long(image, pos, neg, key=jax.random.key(5), num_windows=2, settings=s)
  assert out["video"].shape == (1, 2 * FRAMES - 1, H, W, 3)
  # Window 2 was conditioned on window 1's last frame: its image latent is that frame's encoding.
  last = np.clip(out["video"][0, FRAMES - 1] / 2 + 0.5, 0, 1)
  k2 = jax.random.split(jax.random.key(5), 2)[1]
  again = ours(last, pos, neg, key=k2, settings=s)
  np.testing.assert_allclose(out["windows"][1], again["latents"], atol=1e-6)
  np.testing.assert_allclose(out["video"][:, FRAMES:], np.asarray(again["video"])[:, 1:], atol=1e-6)


def test_cogvideox15_padding_and_inverted_scale_match_diffusers():
  # 1.5: latent frames padded to a multiple of patch_size_t (3 -> 4), image latent divided by the
  # scaling factor, ofs passed; diffusers' output_type='latent' keeps the padding frame, as we do.
  tvae = TorchVAE(invert_scale_latents=True).eval()
  ttr = TorchTransformer(patch_size_t=2, ofs_embed_dim=4).eval()
  vae, tr = FlaxVAE(), FlaxTransformer()
  vv = vae.init(jax.random.key(0), jnp.zeros((1, 1, H, W, 3)))
  tv = tr.init(jax.random.key(0), jnp.zeros((1, 4, H // 8, W // 8, 2 * C)), jnp.zeros((1, L, D)),
               jnp.zeros((1,), jnp.int32))
  facts = i2v.ModelFacts(latent_channels=C, vae_scaling_factor=SF, invert_scale_latents=True,
                         patch_size_t=2, use_ofs=True)
  ours = i2v.CogVideoXImageToVideo(tr, tv, vae, vv, facts=facts, progress=False)
  image, pos, neg, _, noise = _inputs(6)
  latents = np.random.default_rng(6).standard_normal((1, 4, H // 8, W // 8, C)).astype(np.float32)
  ref = _reference(tvae, ttr, _scheduler(CogVideoXDDIMScheduler), image, pos, neg, latents, 6,
                   6.0, False)
  settings = i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES, num_inference_steps=5,
                                  guidance_scale=6.0)
  assert i2v.latent_frames(settings, facts) == (4, 1)
  out = ours(image, pos, neg, key=jax.random.key(0), settings=settings, latents=latents,
             image_noise=noise, decode=False)
  np.testing.assert_allclose(out["latents"], ref, atol=1e-5)
