"""Backbone factories (small CNN, timm) and the checkpoint cache."""
