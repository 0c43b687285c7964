"""The fedge client: the ClientApp, the client agent an institution runs, and its own data.

Nothing here sends a row anywhere: replies carry weights, metrics, a data fingerprint and counts.
"""

from client.data_files import ClientData, dataset_fingerprint, load_client_data, write_client_file
from client.local_data import LocalData, load_simulation_partition

__all__ = [
    "ClientData",
    "LocalData",
    "dataset_fingerprint",
    "load_client_data",
    "load_simulation_partition",
    "write_client_file",
]
