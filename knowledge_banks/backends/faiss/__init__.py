"""``backend: faiss``: versioned folders on local disk. ``bank.py`` (the engine), ``store.py``
(:class:`FaissVectorStore`), ``vector_index.py`` (the FAISS index), ``persistence.py`` (the on-disk format)."""
