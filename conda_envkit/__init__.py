"""conda-envkit: lock, bake and record conda environments for ML teams."""

__version__ = "0.1.0"
