"""Label files: writing and reading cluster labels beside a store, alignment
between rounds, and ``cluster_store`` (features -> k-means -> label file).
"""
