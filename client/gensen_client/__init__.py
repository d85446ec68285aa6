"""Python client of the GenSen embedding service: `Client`, `AsyncClient`, typed errors.

Needs only httpx and numpy. The bulk command (`python -m gensen_client embed ...`) also uses
tqdm, and pyarrow for Parquet: `pip install "./client[bulk]"`.
"""

from gensen_client._core import RetryPolicy, Stats, Window
from gensen_client.client import AsyncClient, Client
from gensen_client.errors import (
    ConnectionFailed,
    GensenError,
    InvalidRequest,
    NotFound,
    Overloaded,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__version__ = "0.1.0"
__all__ = [
    "AsyncClient",
    "Client",
    "ConnectionFailed",
    "GensenError",
    "InvalidRequest",
    "NotFound",
    "Overloaded",
    "RetryPolicy",
    "ServerError",
    "Stats",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Window",
    "__version__",
]
