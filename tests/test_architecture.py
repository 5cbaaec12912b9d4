"""The architecture rules, enforced: the import-linter contracts in pyproject.toml hold (and fail when
an arrow is added back), no import circle remains, ruff passes, and the public import paths import."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_LINT = ("import sys; from importlinter.cli import lint_imports_command; "
         "sys.argv[0] = 'lint-imports'; sys.exit(lint_imports_command())")


def _lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra")
    # this tree first on the path: an editable install elsewhere must not be the one analysed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _LINT, "--no-cache", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "BROKEN" not in r.stdout


def test_a_contract_fails_when_an_arrow_is_added_back(tmp_path):
    """A copy of the tree with two arrows the rules forbid: a connection importing the server, and a
    bank importing Mesh. The same pyproject.toml must refuse both, naming each import."""
    for pkg in ("langchain_mesh", "knowledge_banks"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "langchain_mesh" / "connections" / "_arrow.py").write_text(
        "from ..server.errors import api_error  # a connection that knows the gateway\n")
    (tmp_path / "knowledge_banks" / "_arrow.py").write_text(
        "from langchain_mesh.mesh import Mesh  # a bank that imports Mesh again\n")
    r = _lint_imports(tmp_path)
    assert r.returncode != 0
    out = r.stdout
    assert "connections never import the LangChain adapters, the server or the banks BROKEN" in out
    assert "langchain_mesh.connections._arrow -> langchain_mesh.server.errors" in out
    assert "knowledge banks never import the server, Mesh or the adapters BROKEN" in out
    assert "knowledge_banks._arrow -> langchain_mesh.mesh" in out


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative: grimp
    finds paths between modules but lists no cycles, and the graph is a few hundred edges)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_no_import_circle_but_the_documented_one():
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))
    try:
        g = grimp.build_graph("langchain_mesh", "knowledge_banks", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    # the handle's as_langchain_*() conveniences (ignored in the layers contract, said in the README)
    graph["langchain_mesh.queries"].discard("langchain_mesh.langchain")
    # a bank retriever rebuilt from a dump opens its mesh (the other documented exception)
    graph["knowledge_banks.retriever"].discard("langchain_mesh.langchain._common")
    assert _cycles(graph) == []
    graph["langchain_mesh.queries"].add("langchain_mesh.langchain")
    assert len(_cycles(graph)) == 1, "and that arrow is the only one that closes a circle"


def test_ruff_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is in the dev extra")
    r = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_gateways_setting_names_match_the_openai_dialect():
    """server/translate.py writes OpenAI's request keys out (the server imports no provider module);
    they must be the ones the OpenAI-wire connections send."""
    from langchain_mesh.connections.openai_wire import Dialect
    from langchain_mesh.server.translate import _SETTING_OF

    sent = Dialect(unsupported=frozenset(), extra_keys={"topK": "top_k"}).setting_keys
    assert {k: s for k, s in _SETTING_OF.items() if k != "max_completion_tokens"} == {v: k for k, v in sent.items()}


@pytest.mark.parametrize("path,name", [
    ("langchain_mesh", "Mesh"),
    ("langchain_mesh", "MeshChatModel"),
    ("langchain_mesh", "Connection"),
    ("langchain_mesh", "register_connection_type"),
    ("langchain_mesh.connections.base", "Passthrough"),
    ("langchain_mesh.connections.openai", "OpenAIConnection"),
    ("langchain_mesh.connections.openai_base", "OpenAIWireConnection"),
    ("langchain_mesh.connections.openai_wire", "Dialect"),
    ("langchain_mesh.connections.anthropic", "AnthropicConnection"),
    ("langchain_mesh.connections.bedrock", "BedrockConnection"),
    ("langchain_mesh.connections.http1", "HTTPClient"),
    ("langchain_mesh.config", "load_config"),
    ("langchain_mesh.testing.openai", "OpenAIServer"),
    ("knowledge_banks", "FaissVectorStore"),
    ("knowledge_banks", "ElasticsearchVectorStore"),
    ("knowledge_banks", "AzureSearchVectorStore"),
    ("knowledge_banks.bank", "KnowledgeBank"),
])
def test_public_import_paths_still_import(path, name):
    assert getattr(importlib.import_module(path), name) is not None


@pytest.mark.parametrize("old,new", [
    ("langchain_mesh.connections.openai_wire", "langchain_mesh.connections.openai.wire"),
    ("langchain_mesh.connections.openai_base", "langchain_mesh.connections.openai.base"),
    ("langchain_mesh.connections.azure_openai", "langchain_mesh.connections.openai.azure"),
    ("langchain_mesh.connections.http1", "langchain_mesh.connections.transport.http1"),
    ("langchain_mesh.connections.vertex_wire", "langchain_mesh.connections.vertex.wire"),
    ("knowledge_banks.faiss_store", "knowledge_banks.backends.faiss.store"),
    ("knowledge_banks.persistence", "knowledge_banks.backends.faiss.persistence"),
    ("knowledge_banks.elasticsearch_store", "knowledge_banks.backends.elasticsearch.store"),
])
def test_an_old_module_path_is_the_moved_module(old, new):
    """The same module object under both names: private names and monkeypatches are shared."""
    moved = importlib.import_module(new)
    assert importlib.import_module(old) is moved and sys.modules[old] is moved
    assert moved.__spec__.name == new and moved.__name__ == new


def test_a_family_package_gives_its_old_modules_names():
    from langchain_mesh.connections import anthropic, openai
    from langchain_mesh.connections.anthropic import connection

    assert anthropic.AnthropicConnection is connection.AnthropicConnection
    assert openai.OpenAIConnection.type_name == "openai"
    with pytest.raises(AttributeError):
        anthropic.NoSuchName  # noqa: B018


def test_every_module_imports():
    """After a move (or a merge that brings code written against the old layout), a relative import
    that points nowhere shows up here, not at a user's first call."""
    import pkgutil

    import knowledge_banks
    import langchain_mesh

    broken = []
    for pkg in (langchain_mesh, knowledge_banks):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if info.name.endswith("__main__"):  # runs the CLI
                continue
            try:
                importlib.import_module(info.name)
            except ImportError as e:
                if e.name and e.name.split(".")[0] not in ("langchain_mesh", "knowledge_banks"):
                    continue  # an optional extra that is not installed here
                broken.append(f"{info.name}: {e}")
    assert broken == []
