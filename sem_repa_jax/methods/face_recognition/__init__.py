"""A small ArcFace recognizer trained on synthetic identities (docs/face_recognizer.md)."""
