"""gamerec: a DVC-reproducible two-tower recommender for Amazon video games."""

__version__ = "0.1.0"
