"""Transport helpers every provider family may use: ``http1`` (the lean keep-alive HTTP/1.1 client),
``sse`` (server-sent events), ``clients`` (clients per event loop), ``aws`` (boto3 clients and AWS
credentials). Nothing here knows a provider's JSON."""
