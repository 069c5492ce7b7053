"""Manifests: discover the tree, load each file with lines, validate, build the model."""
