"""Registering our serialisable classes with langchain-core's ``load`` (see the function).

A leaf of its own, so that the LangChain adapters and the knowledge banks (which never import the
adapters: the import contracts in pyproject.toml) can both register their classes::

    from langchain_mesh._langchain_load import allow_in_langchain_load
    allow_in_langchain_load(KnowledgeBankRetriever)
"""

from __future__ import annotations

__all__ = ["allow_in_langchain_load"]


def allow_in_langchain_load(*classes: type) -> None:
    """Let ``load(..., allowed_objects="all")`` revive ``classes``, as it revives the partner
    integrations listed in langchain-core's own mapping (ChatOpenAI, ChatAnthropic...).

    langchain-core has no public registry for third-party classes: ``"all"`` means "the classes in
    its mapping", which the standard ``test_serdes`` relies on. We add our exact class ids (each
    mapped to itself), nothing else; ``allowed_objects="core"``/``"messages"`` are unchanged, and an
    explicit ``allowed_objects=[MeshChatModel]`` works without this. If langchain-core reorganises
    the table, only the ``"all"`` shortcut is lost.
    """
    import importlib

    try:
        module = importlib.import_module("langchain_core.load.load")
        table, cache = module.ALL_SERIALIZABLE_MAPPINGS, module._default_class_paths_cache
    except (ImportError, AttributeError):  # pragma: no cover - a future langchain-core
        return
    for cls in classes:
        path = tuple(cls.lc_id())  # type: ignore[attr-defined]
        table[path] = path
    cache.pop("all", None)
