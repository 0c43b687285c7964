"""The edge agent and ONNX serving runtime (installs with ``fedge[edge]``: no torch, no flwr).

Not built yet: the alias-following agent and the serving runtime are tracked in their own issue.
"""

__all__: list[str] = []
