"""Extraction: manifests, decoding, encoders and the resumable pipeline (one machine or Dask)
that writes embeddings into a :mod:`featstore.store`.
"""
