"""K-means on stored features: kernels, seeding, Lloyd iterations, restarts,
the estimator and its Dask driver.
"""
