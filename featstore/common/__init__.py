"""Shared plumbing every stage uses: device choice, atomic file writes, the writer lock,
read-ahead, worker pools and the Dask runtime.

Owns no data format and no stage; imports only :mod:`featstore.errors` and
:mod:`featstore.progress` from the rest of diccae.
"""
