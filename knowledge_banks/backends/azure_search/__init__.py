"""``backend: azure_search``: versions as indexes behind an index alias. ``bank.py`` (the engine),
``store.py`` (:class:`AzureSearchVectorStore`), ``schema.py`` and ``odata.py`` (index fields, filters as
OData). Tested against :mod:`langchain_mesh.testing.azure_search` (or the service: ``AZURE_SEARCH_ENDPOINT``)."""
