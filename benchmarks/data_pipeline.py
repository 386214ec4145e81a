"""Throughput of the record loader (grain, 0/1/2 workers) and of the synthetic human-video generator.

  python -m benchmarks.data_pipeline [--clips 64] [--latent 13,30,45,16] [--batch 4]

Records carry video and depth latents of --latent shape (default: 240x360x49 pixels under the
CogVideoX VAE geometry), image latents, face embeddings and masks, as the annotator writes them.
"""
import argparse
import os
import tempfile
import time

import numpy as np


def _fake_records(n, latent, frames=49):
  f, h, w, c = latent
  rng = np.random.default_rng(0)
  for i in range(n):
    yield {"schema_version": 1, "clip_id": f"b{i:05d}", "caption": "a person dancing",
           "num_frames": frames, "fps": 8.0, "height": h * 8, "width": w * 8,
           "video_latents": rng.standard_normal(latent, np.float32),
           "depth_latents": rng.standard_normal(latent, np.float32),
           "image_latents": rng.standard_normal((1, h, w, c), np.float32),
           "image_noise_sigma": 0.05, "face_embeds": rng.standard_normal((frames, 512), np.float32),
           "face_present": np.ones(frames, bool), "face_boxes": np.zeros((frames, 4), np.float32),
           "face_masks": np.zeros((frames, h, w), np.float16)}


def bench_loader(tmp, clips, latent, batch):
  from data_pipelines import loader, records
  path = os.path.join(tmp, "bench.array_record")
  t = time.perf_counter()
  records.write_record_file(path, _fake_records(clips, latent))
  size = os.path.getsize(path) / clips / 2**20
  print(f"wrote {clips} records of {size:.2f} MiB in {time.perf_counter() - t:.1f} s")
  src = loader.ClipRecordSource(path)
  for workers in (0, 1, 2):
    dl = loader.clip_data_loader(src, seed=0, batch_size=batch, worker_count=workers,
                                 shard_index=0, shard_count=1)
    t0 = time.perf_counter()
    it = iter(dl)
    next(it)
    t1 = time.perf_counter()
    n = batch
    for b in it:
      n += len(b["clip_id"])
    t2 = time.perf_counter()
    print(f"DataLoader workers={workers}: first batch {t1 - t0:.2f} s, then "
          f"{(n - batch) / (t2 - t1):.1f} clips/s ({(n - batch) * size / (t2 - t1):.0f} MiB/s)")
  ds = loader.clip_dataset(src, seed=0, batch_size=batch, shard_index=0, shard_count=1)
  t0 = time.perf_counter()
  n = sum(len(b["clip_id"]) for b in ds)
  print(f"MapDataset (in process): {n / (time.perf_counter() - t0):.1f} clips/s")


def bench_synthetic(tmp):
  from data_pipelines import synthetic
  for (h, w, f, count) in ((64, 96, 9, 16), (96, 64, 49, 4), (240, 360, 17, 2), (480, 720, 49, 1)):
    t = time.perf_counter()
    for k in range(count):
      synthetic.render_clip(seed=k, num_frames=f, height=h, width=w)
    dt = (time.perf_counter() - t) / count
    print(f"render_clip {h}x{w}x{f}: {1 / dt:.2f} clips/s ({dt / f * 1e3:.1f} ms/frame)")
  for n, f in ((256, 9), (64, 49)):
    t = time.perf_counter()
    synthetic.write_dataset(os.path.join(tmp, f"syn{f}"), n, f, 64, 96, seed=0)
    dt = time.perf_counter() - t
    print(f"write_dataset {n} clips 64x96x{f} (render + mp4 + depth + faces): {dt:.1f} s, "
          f"{n / dt:.1f} clips/s")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--clips", type=int, default=64)
  p.add_argument("--latent", default="13,30,45,16")
  p.add_argument("--batch", type=int, default=4)
  args = p.parse_args()
  latent = tuple(int(x) for x in args.latent.split(","))
  with tempfile.TemporaryDirectory() as tmp:
    bench_loader(tmp, args.clips, latent, args.batch)
    bench_synthetic(tmp)


if __name__ == "__main__":
  main()
