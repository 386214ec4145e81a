"""Job 'annotate': the record fields a method trains on (config.annotate.method), for every clip of
a dataset (config.data.layout: 'manifest', or StableAnimator's 'official' folders, indexed first),
into ArrayRecord records.

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
  encode_image = teachers.clip_image_encoder(a.clip_dir) if a.get("clip_dir") else None
  return annotators.Teachers(encode_video=encode, embed_faces=embed, face_detector=detector,
                             encode_image=encode_image)


def _sync(shard_count: int, what: str) -> None:
  if shard_count > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(what)


def _render_synthetic(config, shard_index, shard_count, bar, official: bool) -> None:
  """Renders config.data.synthetic_clips clips into a new or empty data.root."""
  from data_pipelines import synthetic
  d = config.data
  missing = "rec/ or vec/ folder" if official else "manifest.jsonl"
  what = "the official layout" if official else "videos and a manifest.jsonl"
  if d.synthetic_clips <= 0:
    raise ValueError(f"config.data.root={d.root}: no {missing} (expected {what}, docs/data.md); "
                     "to render synthetic clips into a new folder, set config.data.synthetic_clips "
                     "to their number")
  if shard_index == 0 and os.path.isdir(d.root) and os.listdir(d.root):
    raise ValueError(f"config.data.root={d.root} holds files but no {missing}: synthetic clips "
                     "are rendered only into a new or empty folder")
  if shard_index == 0:
    logging.info("rendering %d synthetic clips into %s", d.synthetic_clips, d.root)
    kwargs = dict(fps=d.fps, seed=config.seed, progress=bar("render"))
    if official:   # with dense/ maps where the method trains on them (VividPose)
      from data_pipelines import records
      kwargs["dense"] = "dense_maps" in records.method_fields(config.annotate.method)
    write = synthetic.write_official_dataset if official else synthetic.write_dataset
    write(d.root, d.synthetic_clips, d.num_frames, d.synthetic_height, d.synthetic_width,
          **kwargs)
  _sync(shard_count, "synthetic dataset written")


def _dataset_root(config, shard_index, shard_count, bar) -> str:
  """The folder of manifest.jsonl the annotation reads: data.root, or for data.layout='official'
  the index of the official layout at data.root (<workdir>/dataset, official_layout.py)."""
  from data_pipelines import official_layout
  d = config.data
  kind = d.get("layout", "manifest")
  if kind == "manifest":
    if not os.path.isfile(os.path.join(d.root, "manifest.jsonl")):
      _render_synthetic(config, shard_index, shard_count, bar, official=False)
    return d.root
  if kind != "official":
    raise ValueError(f"config.data.layout={kind!r}: expected 'manifest' or 'official'")
  if not any(os.path.isdir(os.path.join(d.root, s)) for s in official_layout.SUBSETS):
    _render_synthetic(config, shard_index, shard_count, bar, official=True)
  index = os.path.join(config.workdir, "dataset")
  if shard_index == 0:
    official_layout.index_dataset(d.root, index)
  _sync(shard_count, "official layout indexed")
  return index


def run(config) -> None:
  import jax
  from tqdm import tqdm

  from data_pipelines import annotate, annotators
  d, a = config.data, config.annotate
  dataset_name = d.split or os.path.basename(os.path.normpath(d.root))

  def bar(desc):
    return functools.partial(tqdm, desc=f"{desc} {dataset_name}") if config.progress_bar else None
  shard_index = jax.process_index() if a.shard_index < 0 else a.shard_index
  shard_count = jax.process_count() if a.shard_count < 0 else a.shard_count
  root = _dataset_root(config, shard_index, shard_count, bar)
  spec = annotate.ClipSpec(num_frames=d.num_frames, fps=d.fps, height=d.height, width=d.width,
                           resize_mode=d.resize_mode, start=d.start, disparity=a.disparity,
                           mask_stride=a.mask_stride, seed=a.noise_seed)
  out = a.output_dir or os.path.join(config.workdir, "annotations")
  teachers = _teachers(config)
  chosen = annotators.for_method(a.method, teachers)
  if "face_weight_masks" in annotate.annotated_fields(chosen):
    annotators.check_mask_grid(teachers.encode_video, spec)
  summary = annotate.annotate_dataset(
      root, out, spec, chosen,
      shard_index=shard_index, shard_count=shard_count, split=d.split or None,
      progress=bar("annotate"), reannotate=a.reannotate)
  logging.info("annotation shard %d/%d: %s", shard_index, shard_count, summary)
