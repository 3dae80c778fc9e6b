"""The chunked Zarr feature store: its format, reading rows as feature blocks,
importing HDF5, integrity checks and summaries.

Every stage after extraction reads through this package; nothing here knows about
k-means, confusion or training.
"""
