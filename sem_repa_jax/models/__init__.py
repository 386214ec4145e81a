"""Model families (cogvideox/, encoders/, semrepa, animator, ...) and `load_pretrained`."""
from sem_repa_jax.models.pretrained import load_pretrained, save_pretrained

__all__ = ["load_pretrained", "save_pretrained"]
