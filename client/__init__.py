"""The fedge client: the Flower ClientApp and the data it trains on (which never leaves it)."""

from client.local_data import LocalData, load_simulation_partition

__all__ = ["LocalData", "load_simulation_partition"]
