"""The package's imports point down the layers (docs/architecture.md):

  logging_setup <- nn <- models <- diffusion / training / eval <- methods <- pipelines <- jobs
    <- config_checks <- main

Every import statement counts, those inside functions (lazy imports) included. The package never
imports configs/, conversion/, tests/ or benchmarks/; data_pipelines/ (which imports the package)
only from pipelines and above.
"""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "sem_repa_jax")
# logging_setup imports nothing of the package, so every layer may use it.
LAYERS = {"logging_setup": 0, "nn": 1, "models": 2, "diffusion": 3, "training": 3, "eval": 3,
          "methods": 4, "pipelines": 5, "jobs": 6, "config_checks": 7, "main": 8}
OUTSIDE = ("configs", "conversion", "tests", "benchmarks")
DATA_PIPELINES_FROM = LAYERS["pipelines"]


def imported_modules(tree: ast.AST):
  """(line, absolute module name) of every import in `tree`, nested ones included."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        raise AssertionError(f"line {node.lineno}: relative import; the package uses absolute ones")
      yield node.lineno, node.module or ""
      # `from sem_repa_jax import jobs` imports the subpackage `jobs`.
      if node.module == "sem_repa_jax":
        for alias in node.names:
          yield node.lineno, f"sem_repa_jax.{alias.name}"


def layer_of(module: str) -> int | None:
  parts = module.split(".")
  if parts[0] != "sem_repa_jax" or len(parts) < 2:
    return None
  return LAYERS.get(parts[1])


def violations(path: str, source: str) -> list[str]:
  rel = os.path.relpath(path, ROOT)
  parts = rel[:-3].split(os.sep)
  mine = LAYERS.get(parts[1]) if len(parts) > 1 else None
  out = []
  for line, module in imported_modules(ast.parse(source, rel)):
    top = module.split(".")[0]
    if top in OUTSIDE:
      out.append(f"{rel}:{line} imports {module} (outside the package)")
    elif top == "data_pipelines" and (mine or 0) < DATA_PIPELINES_FROM:
      out.append(f"{rel}:{line} imports {module} (data_pipelines only from pipelines and above)")
    elif mine is not None and (layer_of(module) or 0) > mine:
      out.append(f"{rel}:{line} imports {module} (a higher layer)")
  return out


def package_files():
  for d, _, files in os.walk(PACKAGE):
    for f in sorted(files):
      if f.endswith(".py"):
        yield os.path.join(d, f)


def test_every_package_folder_has_a_layer():
  folders = {p.split(os.sep)[0] for p in
             (os.path.relpath(f, PACKAGE) for f in package_files()) if p != "__init__.py"}
  assert {f[:-3] if f.endswith(".py") else f for f in folders} <= set(LAYERS)


def test_imports_point_down_the_layers():
  found = []
  for path in package_files():
    with open(path) as f:
      found += violations(path, f.read())
  assert not found, "\n".join(found)


@pytest.mark.parametrize("source,expected", [
    ("from sem_repa_jax.jobs import demo", "a higher layer"),
    ("def f():\n  from sem_repa_jax.methods.semrepa import factory", "a higher layer"),
    ("from sem_repa_jax import pipelines", "a higher layer"),
    ("import configs.base", "outside the package"),
    ("def f():\n  from conversion import writer", "outside the package"),
    ("from data_pipelines import loader", "data_pipelines only"),
])
def test_the_checker_catches_upward_imports(source, expected):
  path = os.path.join(PACKAGE, "models", "example.py")
  assert any(expected in v for v in violations(path, source))
  assert not violations(path, "from sem_repa_jax.nn import attention\nimport jax")


def test_configs_parse_without_jax():
  """Config files are plain data: parsing every one of them imports neither jax nor flax."""
  names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))
  code = ("import importlib, sys\n"
          f"for n in {names!r}:\n"
          "  importlib.import_module('configs.' + n).get_config()\n"
          "heavy = sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules)\n"
          "assert not heavy, heavy\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
