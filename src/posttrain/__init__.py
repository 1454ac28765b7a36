"""posttrain: Nemotron post-training data, from the hub to packed, verified training shards."""

__version__ = "0.1.0"
