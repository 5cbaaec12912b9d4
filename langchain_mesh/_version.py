"""The package version, in a leaf module: anything (knowledge_banks' manifests) may read it without
importing the package's public names."""

__version__ = "0.1.0"
