"""Saved folders name a kind; the registry builds them, and folders from before a factory moved load."""
import importlib
import os

import numpy as np
import pytest

from sem_repa_jax.methods.semrepa.model import SemanticREPA
from sem_repa_jax.models import load_pretrained, registry

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


@pytest.mark.parametrize("kind", sorted(registry.FACTORIES))
def test_every_registered_factory_imports(kind):
  module_name, _, attr = registry.factory_of(kind).partition(":")
  assert callable(getattr(importlib.import_module(module_name), attr))


def test_unknown_kind_is_named():
  with pytest.raises(KeyError, match="unknown model kind 'svd-unett'.*cogvideox-transformer"):
    registry.factory_of("svd-unett")


def test_stage1_folder_exported_before_the_methods_layer_loads_and_computes_the_same():
  """tests/assets/stage1_a8a6252: a stage-1 export written at commit a8a6252, whose config.json
  names the factory 'sem_repa_jax.jobs._semrepa:build' (no longer there), with the outputs that
  code computed from it."""
  path = os.path.join(ASSETS, "stage1_a8a6252")
  module, variables = load_pretrained(path)
  assert isinstance(module, SemanticREPA)
  expected = np.load(os.path.join(path, "expected.npz"))
  depth = module.apply(variables, expected["z"], expected["t"], method=module.predict_depth)
  identity = module.apply(variables, expected["z"], depth, method=module.predict_identity)
  np.testing.assert_allclose(np.asarray(depth), expected["depth"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(identity), expected["identity"], rtol=1e-5, atol=1e-6)
