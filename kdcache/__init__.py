"""kdcache: knowledge distillation for speaker verification from a cached teacher."""

__version__ = "0.1.0"
