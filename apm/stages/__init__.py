"""Batch stages over photos with Ray Data: the shared skeleton and pipeline, scoring,
evaluation, the teacher's softmax."""
