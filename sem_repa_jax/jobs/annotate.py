"""Job 'annotate': the record fields a method trains on (config.annotate.method), for every clip of
a dataset, into ArrayRecord records.

See data_pipelines/annotate.py for the stages, data_pipelines/annotators.py for the annotator of
each field and docs/data.md for the record schema.
"""
import functools
import os

from absl import logging


def _teachers(config):
  from data_pipelines import annotators, faces, teachers
  a = config.annotate
  if a.encoder == "codec":
    encode = teachers.codec_encoder(a.codec_spatial_factor)
  elif a.encoder == "vae":
    if not a.vae_dir:
      raise ValueError("config.annotate.encoder='vae' needs config.annotate.vae_dir")
    encode = teachers.vae_encoder(a.vae_dir, a.vae_scaling_factor)
  else:
    raise ValueError(f"config.annotate.encoder={a.encoder!r}: expected 'codec' or 'vae'")
  if a.faces == "identity":
    embed = None
  elif a.faces == "arcface":
    if not a.arcface_dir:
      raise ValueError("config.annotate.faces='arcface' needs config.annotate.arcface_dir")
    embed = faces.arcface_embedder(a.arcface_dir, crop=a.face_crop)
  else:
    raise ValueError(f"config.annotate.faces={a.faces!r}: expected 'identity' or 'arcface'")
  detector = None
  if a.face_detector:
    from sem_repa_jax.models.encoders.face_detect import SCRFD
    detector = SCRFD(a.face_detector)
  return annotators.Teachers(encode_video=encode, embed_faces=embed, face_detector=detector)


def run(config) -> None:
  import jax
  from tqdm import tqdm

  from data_pipelines import annotate, annotators, synthetic
  d, a = config.data, config.annotate
  dataset_name = d.split or os.path.basename(os.path.normpath(d.root))

  def bar(desc):
    return functools.partial(tqdm, desc=f"{desc} {dataset_name}") if config.progress_bar else None
  shard_index = jax.process_index() if a.shard_index < 0 else a.shard_index
  shard_count = jax.process_count() if a.shard_count < 0 else a.shard_count
  if not os.path.isfile(os.path.join(d.root, "manifest.jsonl")):
    if d.synthetic_clips <= 0:
      raise ValueError(f"config.data.root={d.root}: no manifest.jsonl (expected videos and a "
                       "manifest.jsonl, docs/data.md); to render synthetic clips into a new "
                       "folder, set config.data.synthetic_clips to their number")
    if shard_index == 0 and os.path.isdir(d.root) and os.listdir(d.root):
      raise ValueError(f"config.data.root={d.root} holds files but no manifest.jsonl: synthetic "
                       "clips are rendered only into a new or empty folder")
    if shard_index == 0:
      logging.info("rendering %d synthetic clips into %s", d.synthetic_clips, d.root)
      synthetic.write_dataset(d.root, d.synthetic_clips, d.num_frames, d.synthetic_height,
                              d.synthetic_width, fps=d.fps, seed=config.seed,
                              progress=bar("render"))
    if shard_count > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("synthetic dataset written")
  spec = annotate.ClipSpec(num_frames=d.num_frames, fps=d.fps, height=d.height, width=d.width,
                           resize_mode=d.resize_mode, start=d.start, disparity=a.disparity,
                           mask_stride=a.mask_stride, seed=a.noise_seed)
  out = a.output_dir or os.path.join(config.workdir, "annotations")
  summary = annotate.annotate_dataset(
      d.root, out, spec, annotators.for_method(a.method, _teachers(config)),
      shard_index=shard_index, shard_count=shard_count, split=d.split or None,
      progress=bar("annotate"), reannotate=a.reannotate)
  logging.info("annotation shard %d/%d: %s", shard_index, shard_count, summary)
