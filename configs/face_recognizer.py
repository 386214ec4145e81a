"""A small ArcFace recognizer for the synthetic identities (job `train_face_recognizer`): the
stand-in for ArcFace wherever the project embeds faces of synthetic people (the face encoder's
input, the HJB face loss, the CSIM score), shipped as assets/face_recognizer (docs/face_recognizer.md).

  python -m sem_repa_jax.main --config configs/face_recognizer.py
  rm -rf assets/face_recognizer && cp -r runs/face_recognizer/export/face_recognizer assets/face_recognizer

The model is the project's IResNet (kind 'arcface', 112 x 112 inputs, as every ArcFace here), shrunk
to one block per stage; trained with the ArcFace loss on face crops ('square', the path the ID
metric takes) of synthetic clips at the demo's frame sizes, and measured on held-out identities:
<workdir>/face_recognizer.json and face_recognizer.md. The defaults took 12.6 min wall (render
~80 s, 1000 steps) on a shared 2-core machine.

Identity seeds: training 100000 + k, held out 200000 + k (render seeds 5000000 + ..., 6000000 + ...);
the demo and demo_pretrain draw theirs below 4000 (synthetic.clip_plans: 1000 * seed + k), the
job tests use 300000 + k.
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "train_face_recognizer"
  c.workdir = "runs/face_recognizer"

  c.data = ml_collections.ConfigDict()
  c.data.num_identities = 1000       # training identities (ArcFace classes)
  c.data.identity_seed = 100000      # identity k has synthetic identity seed identity_seed + k
  c.data.render_seed = 5000000       # clips' render seeds (motion, camera, background) from here
  c.data.clips_per_identity = 4      # clip j at sizes[j % len] with motion_variations[j % len]
  c.data.num_frames = 9
  c.data.fps = 4.0
  # The demo renders 48 x 32 portrait frames (configs/demo.py): faces ~4 pixels across, upsampled
  # to 112. Landscape and a doubled size add scale variation; fixed (the demo's) and random motion
  # both.
  c.data.sizes = ((48, 32), (48, 32), (32, 48), (96, 64))
  c.data.motion_variations = (0.0, 1.0)
  c.data.views = 8                   # augmented copies of each face per epoch
  c.data.box_shift = 0.1             # box jitter: shift (fraction of the box size) ...
  c.data.box_scale = 0.15            # ... and scale (1 +- this)
  c.data.flip = 0.5
  c.data.batch_size = 64             # global
  c.data.seed = 0
  c.data.prefetch = 2

  c.model = ml_collections.ConfigDict()   # models/encoders/arcface.py IResNetConfig
  c.model.layers = (1, 1, 1, 1)
  c.model.widths = (8, 16, 32, 48)
  c.model.num_features = 128
  c.model.input_size = 112

  c.loss = ml_collections.ConfigDict()    # ArcFace: s * cos(theta_y + m)
  c.loss.scale = 32.0
  c.loss.margin = 0.3
  c.loss.calibration_faces = 256     # training faces that set the frozen BN statistics at init

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.optimizer.learning_rate = 3e-3
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.decay_steps = 1000
  c.optimizer.end_lr_ratio = 0.01
  c.optimizer.weight_decay = 5e-4

  c.eval = ml_collections.ConfigDict()
  c.eval.num_identities = 100        # held-out identities; 0: no figures
  c.eval.identity_seed = 200000
  c.eval.render_seed = 6000000
  c.eval.clips_per_identity = 2
  c.eval.num_frames = 9
  c.eval.sizes = ((48, 32),)         # the demo's
  c.eval.motion_variations = (0.0, 1.0)

  c.checkpoint.every_steps = 500
  c.log_every_steps = 50
  return c
