"""Built-in stream definitions (installed as ``cladapt.streams``): data in ``*.toml``, read by
``builtin.py`` which maps each definition's ``kind`` to a builder."""
