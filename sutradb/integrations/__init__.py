"""Adapters between sutradb and other libraries, one module per library.

Each module imports its library when it is imported itself (``import sutradb`` imports
none of them), and raises :class:`~sutradb.errors.MissingDependencyError` naming the
extra to install when that library is missing.

:mod:`sutradb.integrations.langchain`
    :class:`~sutradb.integrations.langchain.SutraVectorStore`, a LangChain vector
    store (``pip install "sutradb[langchain]"``; see ``docs/langchain.md``).
:mod:`sutradb.integrations.llama_index`
    :class:`~sutradb.integrations.llama_index.SutraVectorStore`, a LlamaIndex vector
    store (``pip install "sutradb[llama-index]"``; see ``docs/llama-index.md``).
"""
