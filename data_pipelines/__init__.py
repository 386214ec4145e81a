"""Video decoding, grain sources, annotation, synthetic human videos."""
