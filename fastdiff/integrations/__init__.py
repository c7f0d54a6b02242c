"""Adapters to other libraries. Each submodule imports its library only when it is imported itself,
so `import fastdiff` never pulls in an optional dependency.

- `fastdiff.integrations.diffusers`: fastdiff's solvers as diffusers schedulers (`pip install fastdiff[diffusers]`).
"""
