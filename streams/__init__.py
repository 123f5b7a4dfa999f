"""Built-in stream definitions (installed as ``cladapt.streams``): data in ``*.toml``, each
family's builders beside the TOML they read (``digits.py`` for ``digits.toml``, ...), registered
by ``builtin.py``, which maps each definition's ``kind`` to its builder."""
