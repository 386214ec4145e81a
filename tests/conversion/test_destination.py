"""A conversion only ever replaces what it wrote: --dst inside, equal to or around --src, or a
folder of the user's, is refused before any work; leftovers of a killed conversion are removed by
the next one; --src may name the .safetensors file of a folder."""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from conversion.__main__ import main as conversion_main
from sem_repa_jax.models.pretrained import remove_stale_leftovers
from tests.conversion.test_variants import tiny_transformer


@pytest.fixture(scope="module")
def src(tmp_path_factory):
  path = tmp_path_factory.mktemp("dst") / "transformer"
  tiny_transformer(path, seed=5)
  return path


def _cli(src, dst):
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    rc = conversion_main(["cogvideox-transformer", "--src", str(src), "--dst", str(dst)])
  return rc, err.getvalue()


def _listing(path):
  return sorted(os.listdir(path))


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_dst_at_src_is_refused_and_src_is_untouched(src, where):
  before = _listing(src)
  dst = {"same": src, "inside": src / "converted", "around": src.parent}[where]
  rc, err = _cli(src, dst)
  assert rc == 2 and "is, lies inside or contains --src" in err
  assert _listing(src) == before
  assert not (src / "converted").exists()


def test_a_users_folder_is_refused_an_earlier_conversion_replaced(src, tmp_path):
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  rc, err = _cli(src, mine)
  assert rc == 2 and "holds files this tool did not write" in err
  assert (mine / "notes.txt").read_text() == "keep me"
  dst = tmp_path / "out"
  assert _cli(src, dst)[0] == 0
  assert _cli(src, dst)[0] == 0                      # an earlier conversion: replaced whole
  assert json.loads((dst / "config.json").read_text())["kind"] == "cogvideox-transformer"
  empty = tmp_path / "empty"
  empty.mkdir()
  assert _cli(src, empty)[0] == 0


def test_src_may_be_the_folders_safetensors_file(src, tmp_path):
  rc, err = _cli(src / "diffusion_pytorch_model.safetensors", tmp_path / "from_file")
  assert rc == 0, err


def test_leftovers_of_a_killed_save_are_removed_by_the_next(src, tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  dst = tmp_path / "out"
  stale = tmp_path / f"out.partial-{dead}"
  (stale / "variables").mkdir(parents=True)
  live = tmp_path / f"out.partial-{os.getpid()}x"     # not a pid: not ours to remove
  live.mkdir()
  assert _cli(src, dst)[0] == 0
  assert not stale.exists() and live.exists()
  assert remove_stale_leftovers(str(dst)) == []
