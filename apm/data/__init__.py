"""Inputs: the AVA tables, manifests, listings of a library, decoding photos, the synthetic AVA."""
