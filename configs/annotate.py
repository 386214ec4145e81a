"""Annotation: videos + teacher inputs -> ArrayRecord training records (data_pipelines/annotate.py)
holding the fields annotate.method trains on (data_pipelines/records.py METHOD_FIELDS).

Runs once per dataset; rerunning skips finished clips. Each process takes clips i with
i % shard_count == shard_index and writes its own record file, so hosts split the work.
With data.synthetic_clips > 0 and a new data.root, a small synthetic dataset is rendered there
first (never into a folder of the user's); the default encoder is the lossless latent codec. For
real data set data.root, annotate.encoder='vae' and annotate.vae_dir, annotate.faces='arcface'
and annotate.arcface_dir. A rerun with another clip spec or other fields into the same output is
refused (annotate.reannotate=True redoes every clip).
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "annotate"
  c.workdir = "runs/annotate"

  c.data = ml_collections.ConfigDict()
  c.data.root = "runs/annotate/synthetic"   # holds manifest.jsonl, videos, depth/, faces/
  c.data.split = ""                         # "" = every split
  c.data.num_frames = 9                    # SemanticREPA: 49
  c.data.fps = 8.0
  c.data.height = 96                       # SemanticREPA: 480
  c.data.width = 144                       # SemanticREPA: 720
  c.data.resize_mode = "auto"               # vertical videos: fit height and pad the width
  c.data.start = 0.0                        # seconds into each video
  c.data.synthetic_clips = 0                # >0: render this many clips into a new data.root
  c.data.synthetic_height = 96
  c.data.synthetic_width = 144

  c.annotate = ml_collections.ConfigDict()
  c.annotate.output_dir = ""                # "" = <workdir>/annotations
  c.annotate.method = "semrepa"             # whose record fields to write (records.METHOD_FIELDS)
  c.annotate.encoder = "codec"              # 'codec' (lossless space-to-depth stand-in) | 'vae'
  c.annotate.codec_spatial_factor = 2       # pixels per latent side for the codec
  c.annotate.vae_dir = ""                   # converted CogVideoX VAE (python -m conversion)
  c.annotate.vae_scaling_factor = 0.7       # 2b: 1.15258426
  c.annotate.faces = "identity"             # 'identity' (faces/<id>.npz identity) | 'arcface'
  c.annotate.arcface_dir = ""
  # How ArcFace sees a face (face_embed.CROPS): 'square' (around the box; what records held so far),
  # 'box', or 'landmarks' (aligned to the ArcFace template, as the ID metric does, where the faces
  # file or the detector gives 5 landmarks).
  c.annotate.face_crop = "square"
  c.annotate.face_detector = ""             # SCRFD .onnx run on the frames; "" = faces/<id>.npz boxes
  c.annotate.disparity = False              # depth files hold disparity (larger = closer)
  c.annotate.mask_stride = 8
  c.annotate.noise_seed = 0
  c.annotate.reannotate = False             # True: redo every clip (e.g. after a spec change)
  c.annotate.shard_index = -1               # -1: jax.process_index()
  c.annotate.shard_count = -1               # -1: jax.process_count()
  return c
