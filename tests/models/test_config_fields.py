"""A saved folder's model config with a field the model does not know is refused by name."""
import pytest

from sem_repa_jax.models.encoders import clip, t5


@pytest.mark.parametrize("build,what", [(t5.build_t5_encoder, "T5"),
                                        (clip.build_clip_vision, "CLIP vision")])
def test_unknown_config_field_is_named(build, what):
  with pytest.raises(ValueError, match=rf"^{what} config has unknown fields \['num_frames'\]; "
                                       r"expected some of \[.*'(num_heads|num_attention_heads)'"):
    build({"num_frames": 4})


def test_known_fields_build_the_config():
  assert t5.build_t5_encoder({"num_layers": 2}).config.num_layers == 2
  assert clip.build_clip_vision({"image_size": 28}).config.image_size == 28
