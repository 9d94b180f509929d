"""The pipeline's stages: train a source (``source``), transfer to a target (``transfer``), score (``evaluate``).

``common`` holds what they share: data options -> splits and loaders, scoring, the metadata of a trained folder.
"""
