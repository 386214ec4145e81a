"""Networks of the evaluation metrics (LPIPS, FID's InceptionV3), as the reference packages build them."""
