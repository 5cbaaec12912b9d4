"""pytest fixtures serving the OpenAI wire format locally, one per flavour of the services that speak it.

=============================  ==================================================================
fixture                        server
=============================  ==================================================================
``openai_server``              ``OpenAIServer(flavor="openai")`` (also any OpenAI-compatible API)
``azure_openai_server``        ``OpenAIServer(flavor="azure")``
``azure_serverless_server``    ``OpenAIServer(flavor="azure_serverless")``
``databricks_server``          ``OpenAIServer(flavor="databricks")``
``mistral_server``             ``OpenAIServer(flavor="mistral")``
=============================  ==================================================================

Each server starts once per test session, on a free port, and is ``reset()`` before every test that
uses it (no leftover scripts or recorded requests)::

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

The module imports only the standard library and pytest: the servers load when a test first asks
for one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from .openai import OpenAIServer


def _serve(flavor: str) -> Iterator["OpenAIServer"]:
    from .openai import OpenAIServer  # late: collecting tests must not pay for the servers

    with OpenAIServer(flavor=flavor) as srv:
        yield srv


def _fresh(srv: "OpenAIServer") -> "OpenAIServer":
    srv.reset()
    return srv


# One server per session (starting one costs little, but every test would pay it); the
# function-scoped fixtures below hand it out reset.


@pytest.fixture(scope="session")
def _mesh_openai_server_session() -> Iterator["OpenAIServer"]:
    yield from _serve("openai")


@pytest.fixture(scope="session")
def _mesh_azure_openai_server_session() -> Iterator["OpenAIServer"]:
    yield from _serve("azure")


@pytest.fixture(scope="session")
def _mesh_azure_serverless_server_session() -> Iterator["OpenAIServer"]:
    yield from _serve("azure_serverless")


@pytest.fixture(scope="session")
def _mesh_databricks_server_session() -> Iterator["OpenAIServer"]:
    yield from _serve("databricks")


@pytest.fixture(scope="session")
def _mesh_mistral_server_session() -> Iterator["OpenAIServer"]:
    yield from _serve("mistral")


@pytest.fixture
def openai_server(_mesh_openai_server_session: "OpenAIServer") -> "OpenAIServer":
    """A local OpenAI API (``base_url`` ends in ``/v1``; key ``test-key``), reset for this test."""
    return _fresh(_mesh_openai_server_session)


@pytest.fixture
def azure_openai_server(_mesh_azure_openai_server_session: "OpenAIServer") -> "OpenAIServer":
    """A local Azure OpenAI resource (``base_url`` is the ``azure_endpoint``), reset for this test."""
    return _fresh(_mesh_azure_openai_server_session)


@pytest.fixture
def azure_serverless_server(_mesh_azure_serverless_server_session: "OpenAIServer") -> "OpenAIServer":
    """A local Azure AI serverless endpoint (``base_url`` is the target URI), reset for this test."""
    return _fresh(_mesh_azure_serverless_server_session)


@pytest.fixture
def databricks_server(_mesh_databricks_server_session: "OpenAIServer") -> "OpenAIServer":
    """A local Databricks workspace's serving endpoints (``base_url`` ends in ``/serving-endpoints``)."""
    return _fresh(_mesh_databricks_server_session)


@pytest.fixture
def mistral_server(_mesh_mistral_server_session: "OpenAIServer") -> "OpenAIServer":
    """A local Mistral API (``base_url`` ends in ``/v1``), reset for this test."""
    return _fresh(_mesh_mistral_server_session)


# ---- Azure AI Search ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _mesh_azure_search_server_session() -> Iterator[Any]:
    from .azure_search import AzureSearchServer  # late, like the others

    with AzureSearchServer() as srv:
        yield srv


@pytest.fixture
def azure_search_server(_mesh_azure_search_server_session: Any) -> Any:
    """A local Azure AI Search service (``url`` is the endpoint, ``api_key`` the admin key,
    ``query_key`` a read-only key): recorded requests reset, indexes and aliases dropped for this test."""
    srv = _mesh_azure_search_server_session
    srv.reset()
    srv.clear_state()
    return srv


# ---- Elasticsearch --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _mesh_elasticsearch_server_session() -> Iterator[Any]:
    from .elasticsearch import ElasticsearchServer  # late, like the others

    with ElasticsearchServer() as srv:
        yield srv


@pytest.fixture
def elasticsearch_server(_mesh_elasticsearch_server_session: Any) -> Any:
    """A local Elasticsearch (``url``; trial licence, so RRF is served; set ``.license = "basic"`` to
    have it refused): recorded requests reset, indices and aliases dropped for this test."""
    srv = _mesh_elasticsearch_server_session
    srv.reset()
    srv.clear()
    srv.license = "trial"
    return srv


# ---- Anthropic ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _mesh_anthropic_server_session() -> Iterator[Any]:
    from .anthropic import AnthropicServer  # late, like the others

    with AnthropicServer() as srv:
        yield srv


@pytest.fixture
def anthropic_server(_mesh_anthropic_server_session: Any) -> Any:
    """A local Anthropic Messages API (``base_url`` is what the SDK takes; key ``test-key``), reset for this test."""
    srv = _mesh_anthropic_server_session
    srv.reset()
    return srv


# ---- Amazon Bedrock Runtime -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def _mesh_bedrock_server_session() -> Iterator[Any]:
    from .bedrock import BedrockServer  # late, like the others

    with BedrockServer() as srv:
        yield srv


@pytest.fixture
def bedrock_server(_mesh_bedrock_server_session: Any) -> Any:
    """A local Bedrock Runtime (``url`` is the boto3 ``endpoint_url``; region ``us-east-1``, access key
    ``AKIDTESTKEY``, secret ``test-secret``), reset for this test."""
    return _fresh(_mesh_bedrock_server_session)


# ---- Google Gemini (Vertex AI and the Gemini API) and Stability AI --------------------------------


@pytest.fixture(scope="session")
def _mesh_vertex_server_session() -> Iterator[Any]:
    from .vertex import VertexServer  # late, like the others

    with VertexServer() as srv:
        yield srv


@pytest.fixture
def vertex_server(_mesh_vertex_server_session: Any) -> Any:
    """A local Gemini API on both faces (project ``test-project``, OAuth token ``test-token``, API key
    ``test-api-key``; ``service_account_key()`` makes keys its ``/token`` endpoint accepts), reset for this test."""
    srv = _mesh_vertex_server_session
    srv.reset()
    srv.call_ids = srv.thought_signatures = False
    return srv


@pytest.fixture(scope="session")
def _mesh_stability_server_session() -> Iterator[Any]:
    from .stability import StabilityServer  # late, like the others

    with StabilityServer() as srv:
        yield srv


@pytest.fixture
def stability_server(_mesh_stability_server_session: Any) -> Any:
    """A local Stability AI v2beta API (``url`` is the base URL, key ``test-key``), reset for this test."""
    return _fresh(_mesh_stability_server_session)


# ---- SageMaker and Cohere -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _mesh_sagemaker_server_session() -> Iterator[Any]:
    from .sagemaker import SageMakerServer  # late, like the others

    with SageMakerServer() as srv:
        yield srv


@pytest.fixture
def sagemaker_server(_mesh_sagemaker_server_session: Any) -> Any:
    """A local SageMaker Runtime (``url`` is the boto3 ``endpoint_url``; key ``AKIDTEST`` / ``test-secret``,
    region ``us-east-1``; an endpoint's container is its name's prefix: ``tgi-x``, ``cohere-x``...), reset."""
    return _fresh(_mesh_sagemaker_server_session)


@pytest.fixture(scope="session")
def _mesh_cohere_server_session() -> Iterator[Any]:
    from .cohere import CohereServer  # late, like the others

    with CohereServer() as srv:
        yield srv


@pytest.fixture
def cohere_server(_mesh_cohere_server_session: Any) -> Any:
    """A local Cohere v2 API (``url`` is the SDK's ``base_url``; key ``test-key``), reset for this test."""
    return _fresh(_mesh_cohere_server_session)
