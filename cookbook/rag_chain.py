"""A RAG chain on the mesh: retriever -> prompt -> MeshChatModel -> StrOutputParser.

Runs on the embedded default (local SmolLM2 + all-MiniLM-L6-v2) with no configuration::

    python cookbook/rag_chain.py "Which planet has the longest day?"

or on any mesh: ``MESH_CONFIG=mesh.yaml python cookbook/rag_chain.py``. Knowledge banks will hold
the documents in a real deployment; here an in-memory vector store over a few bundled texts keeps
the example self-contained.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from langchain_mesh import Mesh, MeshChatModel, MeshEmbeddings

TEXTS = [
    "Venus rotates so slowly that one day on Venus lasts longer than its year: 243 Earth days.",
    "Jupiter is the largest planet in the solar system; it is a gas giant with a Great Red Spot.",
    "Mars has the tallest volcano in the solar system, Olympus Mons, about 22 kilometres high.",
    "The Eiffel Tower in Paris was completed in 1889 and is about 330 metres tall.",
    "Photosynthesis turns water, carbon dioxide and sunlight into glucose and oxygen in plants.",
    "The Pacific is the largest and deepest ocean on Earth, reaching 11 kilometres in the Mariana Trench.",
]

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer the question using only the context below. Be brief.\n\nContext:\n{context}"),
    ("human", "{question}"),
])


def pick_llm(mesh: Mesh, purpose: str) -> str:
    """The first LLM of the mesh for a purpose (GENERIC_COMPLETION, TEXT_EMBEDDING_EXTRACTION)."""
    items = mesh.list_llms(purpose)
    if not items:
        raise SystemExit(f"the mesh offers no {purpose} model")
    return items[0].id


def format_docs(docs: list[Document]) -> str:
    return "\n".join(f"- {d.page_content}" for d in docs)


def build_chain(mesh: Mesh, k: int = 2) -> Any:
    from langchain_core.vectorstores import InMemoryVectorStore  # here: the main job imports this module too

    embeddings = MeshEmbeddings(model=pick_llm(mesh, "TEXT_EMBEDDING_EXTRACTION"), mesh=mesh)
    store = InMemoryVectorStore.from_texts(TEXTS, embeddings)
    retriever = store.as_retriever(search_kwargs={"k": k})
    chat = MeshChatModel(model=pick_llm(mesh, "GENERIC_COMPLETION"), mesh=mesh, temperature=0, max_tokens=96)
    answer = PROMPT | chat | StrOutputParser()
    # keep the retrieved documents next to the answer so callers can show their sources
    return (
        {"docs": retriever, "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(context=lambda x: format_docs(x["docs"]))
        | RunnablePassthrough.assign(answer=answer)
    )


def main(mesh: Optional[Mesh] = None, question: str = "Which planet has a day longer than its year?") -> dict[str, Any]:
    mesh = mesh or Mesh.default()
    out = build_chain(mesh).invoke(question)
    print(f"Q: {question}")
    print("Sources:")
    for d in out["docs"]:
        print(f"  - {d.page_content}")
    print(f"A: {out['answer']}")
    return {"question": question, "sources": [d.page_content for d in out["docs"]], "answer": out["answer"]}


if __name__ == "__main__":
    main(question=" ".join(sys.argv[1:]) or "Which planet has a day longer than its year?")
