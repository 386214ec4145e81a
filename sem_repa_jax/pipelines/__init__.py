"""End-to-end generation pipelines, readable top to bottom."""
