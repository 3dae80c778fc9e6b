"""The confusion degree M: per-class centroids, PCA, 95 % radii, pairwise overlap,
scaling to [0, 2], the two-pass store engine, reports and plots.
"""
