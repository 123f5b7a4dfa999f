"""Built-in strategy and model plugins (installed as ``cladapt.plugins``). Each module is an
ordinary pluggy plugin, registered exactly as a third-party plugin would be."""
