"""The SemanticREPA demo's report.html: what the run shows and does not show, next to its tables,
samples, depth read by the Structure Alignment Module, loss curves, timings and the config.
The numbers come from jobs/_demo_eval.py; this file is the page and its prose.
"""
import os

from sem_repa_jax.eval import report
from sem_repa_jax.eval.video_io import to_uint8
from sem_repa_jax.methods.semrepa import factory

MODELS = (("pretrained", "pretrained backbone (no stage 2)"), ("finetune", "SemanticREPA"),
          ("finetune_baseline", "plain fine-tuning"))
TEACHER = "teacher (real clip)"
STATIC = "first frame repeated"


def write(config, cfgs, *, rows: dict, ids: list, truth, videos: dict, teacher_depth,
          depth_cols: dict, timings: dict) -> str:
  """Writes <workdir>/report.html and returns its path. rows: {row label: {metric: value}};
  truth (clips, F, H, W, 3) in [-1, 1]; videos: {model label: samples like truth}; teacher_depth
  and depth_cols' values: uint8 depth videos per clip."""
  sample_rows = [(cid, [to_uint8(truth[i])] + [to_uint8(v[i]) for v in videos.values()])
                 for i, cid in enumerate(ids)]
  depth_rows = [(cid, [teacher_depth[i]] + [v[i] for v in depth_cols.values()])
                for i, cid in enumerate(ids)]
  w = config.workdir
  curves = [report.LossCurves(os.path.join(w, "align", "metrics.jsonl"),
                              ["loss", "sam_mse", "idm_l1"], log_y=True, smoothing=0.6,
                              title="Stage 1 losses (alignment modules)")]
  for name, label in MODELS:
    if name in cfgs and os.path.isfile(os.path.join(w, name, "metrics.jsonl")):
      curves.append(report.LossCurves(
          os.path.join(w, name, "metrics.jsonl"),
          ["loss", "loss_diffusion", "loss_structure", "loss_id"], log_y=True, smoothing=0.6,
          title=f"Stage 2 losses: {label}" + (" (L_S, L_ID logged, weight 0)"
                                              if name == "finetune_baseline" else "")))
  sections = [
      report.Notes(_notes(config, cfgs)),
      report.MetricsTable(rows, title="Held-out clips (mean over clips)"),
      report.VideoGrid(sample_rows, title="Samples from held-out first frames",
                       column_labels=["real clip"] + list(videos), fps=config.demo.fps),
      report.VideoGrid(depth_rows, title="Depth read by the Structure Alignment Module",
                       column_labels=["teacher depth"] + list(depth_cols), fps=config.demo.fps),
      *curves,
      report.MetricsTable(timings, title="Stage timings (seconds, the run that did the work)",
                          digits=4),
      report.ConfigBlock(config.to_json_best_effort()),
  ]
  return report.write_report(w, title="SemanticREPA demo", sections=sections)


def _notes(config, cfgs) -> str:
  d, f = config.demo, config.finetune
  pred = config.diffusion.prediction_type
  pred = ("" if pred == "v_prediction" else
          f" The backbone's output is read as {'x0' if pred == 'sample' else 'eps'} "
          f"(diffusion.prediction_type = '{pred}'): converted to v for every loss, taken as x0 by "
          "the sampler; CogVideoX itself predicts v, but a network narrower than its patch tokens "
          "cannot reproduce the noise that v contains, and what it misses stays in the samples.")
  cap = (f" (each timestep's x0 error weighted by min(1 / (1 - ab_t), {f.max_diffusion_weight:g}) "
         "instead of the v-MSE's 1 / (1 - ab_t))" if f.max_diffusion_weight > 0 else "")
  ema = (f" Samples use the EMA of the weights (decay {config.optimizer.ema_decay:g})."
         if config.optimizer.ema_decay > 0 else "")
  pretrained = (f"\n- {dict(MODELS)['pretrained']}: the weights stage 2 starts from, sampled the "
                "same way: what fine-tuning adds." if config.model.pretrained_transformer else "")
  baseline = (f"- {dict(MODELS)['finetune_baseline']}: the same stage 2 (same data, steps, "
              "noise) with lambda_S = lambda_ID = 0, i.e. the CogVideoX I2V loss alone."
              if d.baseline else
              "- (the plain fine-tuning baseline is off: demo.baseline = False)")
  motion = ("each motion's tempo, phase, speed and walking direction are fixed "
            "(demo.motion_variation = 0), so the first frame's pose determines the real clip's "
            "motion" if d.motion_variation == 0
            else "one image cannot fix the motion, so a plausible video that moves differently "
            "also scores low")
  fixed = ("\n- The synthetic motion is fixed per kind (demo.motion_variation = 0): the model learns "
           "motion it can read from the first frame; it is not asked to choose among possible "
           "motions." if d.motion_variation == 0 else "")
  return f"""SemanticREPA end to end on synthetic humans, small enough for a laptop CPU. \
{d.train_clips} training clips and {d.eval_clips} held-out clips of other identities, \
{d.num_frames} frames of {d.height}x{d.width}; depth and identity teachers are exact (rendered).

- Stage 1 ({config.align.num_steps} steps): the Structure Alignment Module learns video latents -> \
depth latents and the ID Alignment Module learns (video, depth) latents -> identity embedding.
- Stage 2 ({f.num_steps} steps): the CogVideoX image-to-video transformer trains with \
L_t{cap} + {f.lambda_structure:g} L_S + {f.lambda_id:g} L_ID through the frozen stage-1 modules.\
{pred}{ema}
{baseline}{pretrained}
- Samples: {d.sample_steps} {d.sampler.upper()} steps from the real first frame of each held-out \
clip, the same initial noise for every model. "{STATIC}" is no model at all: a reference PSNR/SSIM \
that a static video gets.
- Metrics: PSNR/SSIM of frames 2..{d.num_frames} against the real clip ({motion}); depth_rmse: SAM's depth \
read from the video vs the teacher depth of the real clip, as normalized nearness in [0, 1]; \
id_cosine: IDM's identity of the video vs the teacher identity. The IDM stands in for ArcFace \
(the synthetic face teacher is the identity vector itself). The "{TEACHER}" row applies SAM and \
IDM to the real clip: their own error. A judge ranks videos only where that row is clearly the \
best; with the demo's tiny modules and few identities it often is not (docs/demo.md). \
id_score: SemanticREPA's ID score, the cosine of each frame's face with the given first frame's \
face, embedded by a small ArcFace trained on other synthetic identities \
(assets/face_recognizer, docs/face_recognizer.md), the faces cut at the real clip's face boxes \
(no detector sees 4-pixel faces), so a figure that lags the real motion loses score too; its \
"{TEACHER}" row is the real clip's own consistency.

What this does not show:

- {_backbone_note(config, cfgs)}{fixed}
- The VAE is replaced by a lossless space-to-depth codec (sem_repa_jax/models/latent_codec.py): \
latents are rearranged pixels, so the latent-space alignment is easier than in a real VAE space.
- No text: there is no T5 in the demo; the backbone sees zero text tokens in training and \
sampling, so classifier-free guidance has nothing to guide (guidance_scale {d.guidance_scale:g}).
- No ArcFace, no Video Depth Anything: the teachers are the renderer's exact depth and identity.
- No FVD/FID/LPIPS (they need pretrained networks)."""


def _backbone_note(config, cfgs) -> str:
  size = f"a tiny CogVideoX (a few layers, width {_width(cfgs)})"
  if config.model.pretrained_transformer:
    return (f"The backbone is {size}, not CogVideoX-5B: stage 2 fine-tunes the weights in "
            f"{config.model.pretrained_transformer}, pretrained on other synthetic clips and "
            "identities with the plain diffusion loss (configs/demo_pretrain.py), as SemanticREPA "
            "fine-tunes a pretrained CogVideoX-5B-I2V; expect blurry samples whose metrics "
            "differ by little between models at this size and training length.")
  return (f"The backbone is {size} trained from scratch, not CogVideoX-5B fine-tuned from "
          "pretrained weights; expect noisy, blurry samples whose metrics differ by little "
          "between models at this size and training length.")


def _width(cfgs) -> int:
  b = factory.backbone_config(cfgs["finetune"])
  return b.num_attention_heads * b.attention_head_dim
