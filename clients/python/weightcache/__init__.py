"""Python client for the weightcache daemon (docs/protocol.md)."""
from .client import DEFAULT_SOCKET, Client
from .wire import (NVME_ABSENT, NVME_PARTIAL, NVME_STAGED, TIER_NVME, TIER_RAM, FileInfo,
                   HelloOk, ModelInfo, ModelSummary, Progress, ProtocolError, WeightCacheError)

__version__ = "0.1.0"
__all__ = [
    "Client", "DEFAULT_SOCKET", "WeightCacheError", "ProtocolError", "FileInfo", "ModelInfo",
    "ModelSummary", "HelloOk", "Progress", "TIER_NVME", "TIER_RAM", "NVME_ABSENT", "NVME_PARTIAL",
    "NVME_STAGED",
]
