"""pytest fixtures serving each provider's wire format locally (and Elasticsearch / Azure AI Search).

===============================  ==============================================================
fixture                          server
===============================  ==============================================================
``openai_server``                ``OpenAIServer(flavor="openai")`` (also any OpenAI-compatible API)
``azure_openai_server``          ``OpenAIServer(flavor="azure")``
``azure_serverless_server``      ``OpenAIServer(flavor="azure_serverless")``
``databricks_server``            ``OpenAIServer(flavor="databricks")``
``mistral_server``               ``OpenAIServer(flavor="mistral")``
``snowflake_cortex_server``      ``SnowflakeCortexServer()``
``anthropic_server``             ``AnthropicServer()``
``bedrock_server``               ``BedrockServer()`` (boto3 ``endpoint_url``)
``sagemaker_server``             ``SageMakerServer()`` (boto3 ``endpoint_url``)
``vertex_server``                ``VertexServer()`` (Vertex AI and the Gemini API)
``cohere_server``                ``CohereServer()``
``stability_server``             ``StabilityServer()``
``elasticsearch_server``         ``ElasticsearchServer()``
``azure_search_server``          ``AzureSearchServer()``
===============================  ==============================================================

Each server starts once per test session, on a free port, and is reset before every test that uses
it (no leftover scripts, recorded requests, indexes)::

    def test_my_app_answers(openai_server):
        openai_server.script(text="Paris")
        assert my_app.ask("Capital of France?", base_url=openai_server.base_url, api_key="test-key") == "Paris"
        assert openai_server.last_request.json["model"] == "gpt-4o"

How to opt in: installing ``langchain-mesh`` registers this module as a pytest plugin (the
``pytest11`` entry point ``langchain_mesh``), so the fixtures are simply there. Where plugin
autoloading is off (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``), load it by hand with
``pytest -p langchain_mesh.testing.fixtures`` or ``pytest_plugins = ["langchain_mesh.testing.fixtures"]``
in a top-level ``conftest.py``; to switch it off, ``pytest -p no:langchain_mesh``. A fixture of the
same name in your own ``conftest.py`` takes precedence.

The module imports only the standard library and pytest: a server's module loads when a test first
asks for it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, Optional

import pytest


def _server_fixture(name: str, target: str, doc: str, options: Optional[dict[str, Any]] = None,
                    fresh: Optional[Callable[[Any], None]] = None) -> None:
    """Define the session-scoped server ``_mesh_<name>_session`` and the fixture ``name`` handing it
    out reset (pytest finds fixtures among a plugin's module attributes).

    One server per session: starting one costs little, but every test would pay it.
    """
    module, _, cls = target.partition(":")

    @pytest.fixture(scope="session", name=f"_mesh_{name}_session")
    def session() -> Iterator[Any]:
        server_cls = getattr(importlib.import_module(f"langchain_mesh.testing.{module}"), cls)
        with server_cls(**(options or {})) as srv:
            yield srv

    def fixture(request: pytest.FixtureRequest) -> Any:
        srv = request.getfixturevalue(f"_mesh_{name}_session")
        srv.reset()
        if fresh is not None:
            fresh(srv)
        return srv

    fixture.__doc__ = doc
    globals()[f"_mesh_{name}_session"] = session
    globals()[name] = pytest.fixture(name=name)(fixture)


def _clear_azure_search(srv: Any) -> None:
    srv.clear_state()


def _clear_elasticsearch(srv: Any) -> None:
    srv.clear()
    srv.license = "trial"


def _plain_vertex(srv: Any) -> None:
    srv.call_ids = srv.thought_signatures = False


_server_fixture(
    "openai_server", "openai:OpenAIServer",
    "A local OpenAI API (``base_url`` ends in ``/v1``; key ``test-key``), reset for this test.",
    {"flavor": "openai"})
_server_fixture(
    "azure_openai_server", "openai:OpenAIServer",
    "A local Azure OpenAI resource (``base_url`` is the ``azure_endpoint``), reset for this test.",
    {"flavor": "azure"})
_server_fixture(
    "azure_serverless_server", "openai:OpenAIServer",
    "A local Azure AI serverless endpoint (``base_url`` is the target URI), reset for this test.",
    {"flavor": "azure_serverless"})
_server_fixture(
    "databricks_server", "openai:OpenAIServer",
    "A local Databricks workspace's serving endpoints (``base_url`` ends in ``/serving-endpoints``).",
    {"flavor": "databricks"})
_server_fixture(
    "mistral_server", "openai:OpenAIServer",
    "A local Mistral API (``base_url`` ends in ``/v1``), reset for this test.", {"flavor": "mistral"})
_server_fixture(
    "snowflake_cortex_server", "snowflake_cortex:SnowflakeCortexServer",
    "A local Snowflake Cortex inference API (``url`` is the connection's ``base_url``; PAT ``test-token``).")
_server_fixture(
    "anthropic_server", "anthropic:AnthropicServer",
    "A local Anthropic Messages API (``base_url`` is what the SDK takes; key ``test-key``), reset for this test.")
_server_fixture(
    "bedrock_server", "bedrock:BedrockServer",
    "A local Bedrock Runtime (``url`` is the boto3 ``endpoint_url``; region ``us-east-1``, access key "
    "``AKIDTESTKEY``, secret ``test-secret``), reset for this test.")
_server_fixture(
    "sagemaker_server", "sagemaker:SageMakerServer",
    "A local SageMaker Runtime (``url`` is the boto3 ``endpoint_url``; key ``AKIDTEST`` / ``test-secret``, "
    "region ``us-east-1``; an endpoint's container is its name's prefix: ``tgi-x``, ``cohere-x``...), reset.")
_server_fixture(
    "vertex_server", "vertex:VertexServer",
    "A local Gemini API on both faces (project ``test-project``, OAuth token ``test-token``, API key "
    "``test-api-key``; ``service_account_key()`` makes keys its ``/token`` endpoint accepts), reset.",
    fresh=_plain_vertex)
_server_fixture(
    "cohere_server", "cohere:CohereServer",
    "A local Cohere v2 API (``url`` is the SDK's ``base_url``; key ``test-key``), reset for this test.")
_server_fixture(
    "stability_server", "stability:StabilityServer",
    "A local Stability AI v2beta API (``url`` is the base URL, key ``test-key``), reset for this test.")
_server_fixture(
    "elasticsearch_server", "elasticsearch:ElasticsearchServer",
    "A local Elasticsearch (``url``; trial licence, so RRF is served; set ``.license = \"basic\"`` to have "
    "it refused): recorded requests reset, indices and aliases dropped for this test.",
    fresh=_clear_elasticsearch)
_server_fixture(
    "azure_search_server", "azure_search:AzureSearchServer",
    "A local Azure AI Search service (``url`` is the endpoint, ``api_key`` the admin key, ``query_key`` a "
    "read-only key): recorded requests reset, indexes and aliases dropped for this test.",
    fresh=_clear_azure_search)
