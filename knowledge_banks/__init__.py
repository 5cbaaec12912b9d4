"""Knowledge banks: vector stores on FAISS, Elasticsearch and Azure AI Search (coming with the knowledge-bank issues)."""
