"""``backend: elasticsearch``: versions as indices behind an alias. ``bank.py`` (the engine), ``store.py``
(:class:`ElasticsearchVectorStore`), ``mapping.py`` and ``filters.py`` (index mapping, filters as queries).
Tested against :mod:`langchain_mesh.testing.elasticsearch` (or a real cluster: ``ELASTICSEARCH_URL``)."""
