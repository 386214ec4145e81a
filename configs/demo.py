"""The embedded demo (`./run.sh demo`): SemanticREPA end to end on a fresh machine, no weights, no data.

Synthetic humans -> annotation (lossless latent codec, exact depth and identity teachers) ->
stage 1 (alignment modules) -> stage 2 (fine-tuning the tiny CogVideoX I2V backbone shipped in
assets/demo_backbone, pretrained by configs/demo_pretrain.py, with the alignment losses) [-> the
same stage 2 without them, for comparison] -> sampling from held-out first frames -> evaluation ->
<workdir>/report.html. Sized for a few minutes on 2 CPU cores. Rerunning reuses every finished
stage whose inputs and settings are unchanged (stages.json; docs/demo.md).

Model, diffusion, optimizer and stage fields are those of configs/semrepa.py; the job derives
each stage's config from this one (data.records, workdirs, the backbone's sample size).
"""
import os

import ml_collections

from configs import annotate, semrepa

# The pretrained tiny backbone that stage 2 fine-tunes (configs/demo_pretrain.py made it).
DEMO_BACKBONE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "assets", "demo_backbone")
# The ArcFace stand-in for synthetic identities (configs/face_recognizer.py made it): the ID score.
FACE_RECOGNIZER = os.path.join(os.path.dirname(DEMO_BACKBONE), "face_recognizer")


def get_config() -> ml_collections.ConfigDict:
  c = semrepa.get_config()
  c.job = "demo"
  c.workdir = "runs/demo"
  c.log_every_steps = 25          # metrics.jsonl lines (loss curves), averaged over the interval

  c.demo = ml_collections.ConfigDict()
  c.demo.train_clips = 128         # synthetic training clips (identities drawn among as many)
  c.demo.eval_clips = 3            # held-out clips: other identities (another synthetic seed)
  c.demo.num_frames = 9            # 1 + 4k (the codec's causal frame grouping): 9 -> 3 latent frames
  # Portrait, as human-animation video is: the figure fills the frame height (a landscape frame of
  # the same area shows it at two thirds the size), and 4 fps spreads the 9 frames over 2 s of
  # motion, so limbs move by several pixels from frame to frame.
  c.demo.height = 48               # pixels; multiples of codec_spatial_factor (latents 24 x 16)
  c.demo.width = 32
  c.demo.fps = 4.0
  # synthetic.render_clip's motion_variation: 0 fixes each motion's tempo, phase, speed and walking
  # direction (walkers cross the frame to the right), so the first frame's pose determines the
  # video: a tiny model can learn it, and PSNR against the real clip is a fair test.
  c.demo.motion_variation = 0.0
  c.demo.codec_spatial_factor = 2  # space-to-depth factor: 4 * p * p * 3 = 48 latent channels
  # Also fine-tune with lambda_S = lambda_ID = 0 (plain fine-tuning) and compare: a second stage 2,
  # about as long again as the first, so off by default to keep the demo within ~6 CPU minutes.
  c.demo.baseline = False
  c.demo.sample_steps = 50         # DDIM steps (trailing spacing) per sample
  c.demo.sampler = "ddim"          # 'ddim' | 'dpm'
  # Classifier-free guidance. CogVideoX I2V guides on the text only and the demo has no text
  # encoder (the backbone sees zero text tokens), so cond == uncond and any scale gives the same
  # video at twice the cost: keep 1.0 unless the records carry T5 embeddings.
  c.demo.guidance_scale = 1.0
  c.demo.export_backbone = ""      # a path: also write stage 2's backbone there (demo_pretrain.py)
  c.demo.face_recognizer = FACE_RECOGNIZER   # the id_score judge ("" leaves id_score out)
  # The annotation stages start from configs/annotate.py; the job sets data paths, sizes and the
  # codec from demo.* (so only the remaining fields, e.g. annotate.mask_stride, are yours to set).
  c.demo.annotate = annotate.get_config()

  # The backbone: 2 layers of 4 heads x 48 = 192 wide, as wide as one 2x2 patch of the 48-channel
  # latents (4 frames x 2x2 pixels x RGB), so a token can carry its patch through to the output.
  # Narrower backbones did not learn to denoise within the CPU budget (docs/demo.md).
  c.model.backbone.num_attention_heads = 4
  c.model.backbone.attention_head_dim = 48

  # The backbone outputs x0, read as v for L_t, the alignment losses and the sampler (docs/demo.md):
  # its tokens carry 2x2 patches of 96 input channels (384 values) in 192 dims, too narrow to
  # reproduce the noise a v-prediction contains; with v, that noise stayed in the samples.
  c.diffusion.prediction_type = "sample"
  # Stage 2 starts from the pretrained tiny backbone, as SemanticREPA starts from CogVideoX-5B-I2V;
  # the fields above describe it (they must match its config.json; "" trains from scratch).
  c.model.pretrained_transformer = DEMO_BACKBONE
  # L_t weighs every timestep's x0 error alike (the paper's v-MSE weighs it by 1 / (1 - ab_t), up
  # to ~1200 near t = 0, which left the samples of this tiny model noisier; docs/demo.md).
  c.finetune.max_diffusion_weight = 1.0

  c.data.batch_size = 2
  c.align.num_steps = 400
  c.finetune.num_steps = 1000
  c.optimizer.learning_rate = 3e-3
  c.demo.finetune_learning_rate = 1e-3   # stage 2's peak rate (0: optimizer.learning_rate)
  c.optimizer.ema_decay = 0.999    # samples use the EMA weights
  c.optimizer.schedule = "warmup_cosine"   # decay_steps = each stage's num_steps (set by the job)
  c.optimizer.warmup_steps = 20
  c.optimizer.end_lr_ratio = 0.1
  c.checkpoint.every_steps = 0     # one checkpoint at the end of each stage (0: only at the end)
  c.checkpoint.async_save = False
  return c
