"""Split a data set's row indices among clients: IID, or Dirichlet non-IID over labels, seeded.

Partitions are of row indices only, so examples of any shape (tabular rows, ``[1, 28, 28]``
images) split alike. Dirichlet label skew needs classes: a regression target (float ``y``,
``[n]`` or ``[n, outputs]``) is first cut into ``REGRESSION_BINS`` quantile bins of its first
output (:func:`stratify`), and each bin is skewed as a class would be.
"""

from __future__ import annotations

import numpy as np

from fedge.errors import ConfigError

__all__ = [
    "MIN_ROWS_PER_CLIENT",
    "REGRESSION_BINS",
    "check_split",
    "dirichlet_partition",
    "iid_partition",
    "label_skew",
    "partition_indices",
    "stratify",
]

# Fewest rows a simulated client may hold: one to train on and one to validate on.
MIN_ROWS_PER_CLIENT = 2
# Quantile bins a regression target is cut into before Dirichlet label skew.
REGRESSION_BINS = 10


def iid_partition(num_rows: int, num_partitions: int, *, seed: int) -> list[np.ndarray]:
    """Shuffle ``range(num_rows)`` with ``seed`` and cut it into near-equal parts.

    Part sizes differ by at most one row.
    """
    _check_counts(num_rows, num_partitions)
    order = np.random.default_rng(seed).permutation(num_rows)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet_partition(
    labels: np.ndarray,
    num_partitions: int,
    *,
    alpha: float,
    seed: int,
    min_rows: int = 2,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Give each client a share of every class drawn from ``Dirichlet(alpha)``.

    Smaller ``alpha`` means more label skew. Draws are repeated (deterministically, from
    ``seed``) until every part holds at least ``min_rows`` rows.

    Raises
    ------
    ConfigError
        If ``alpha`` is not positive or no draw gives every client ``min_rows`` rows.
    """
    labels = np.asarray(labels)
    _check_counts(len(labels), num_partitions)
    if not alpha > 0:
        raise ConfigError(f"dirichlet alpha must be > 0, got {alpha}")
    if min_rows * num_partitions > len(labels):
        raise ConfigError(
            f"cannot give {num_partitions} clients {min_rows} rows each from {len(labels)} rows"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_rows:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ConfigError(
        f"no Dirichlet(alpha={alpha}) split of {len(labels)} rows into {num_partitions} parts gave "
        f"every part {min_rows} rows in {max_tries} tries: raise alpha or lower the client count"
    )


def stratify(targets: np.ndarray, *, bins: int = REGRESSION_BINS) -> np.ndarray:
    """Class labels for label skew: integer targets as they are, float targets as quantile bins.

    A float target (regression, ``[n]`` or ``[n, outputs]``) is cut at the quantiles of its
    first output into at most ``bins`` bins of near-equal counts (ties can merge bins).
    """
    y = np.asarray(targets)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return y.reshape(len(y))
    first = y.reshape(len(y), -1)[:, 0].astype(np.float64)
    edges = np.unique(np.quantile(first, np.linspace(0.0, 1.0, bins + 1)[1:-1])) if len(first) else []
    return np.searchsorted(edges, first, side="right").astype(np.int64)


def partition_indices(
    labels: np.ndarray, num_partitions: int, *, scheme: str, alpha: float, seed: int
) -> list[np.ndarray]:
    """Dispatch to :func:`iid_partition` or :func:`dirichlet_partition` by ``scheme`` name.

    ``labels`` are the data set's targets: class indices, or regression values (binned by
    :func:`stratify` for the Dirichlet scheme).
    """
    if scheme == "iid":
        return iid_partition(len(labels), num_partitions, seed=seed)
    if scheme == "dirichlet":
        return dirichlet_partition(stratify(labels), num_partitions, alpha=alpha, seed=seed)
    raise ConfigError(f"unknown partition scheme {scheme!r}: choose 'iid' or 'dirichlet'")


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each part's label mix and the global one (0..1).

    Regression targets are compared by their quantile bins (:func:`stratify`).
    """
    labels = stratify(labels)
    classes = np.unique(labels)
    global_mix = np.array([(labels == c).mean() for c in classes])
    dists = []
    for part in parts:
        mix = np.array([(labels[part] == c).mean() for c in classes]) if len(part) else global_mix
        dists.append(0.5 * np.abs(mix - global_mix).sum())
    return float(np.mean(dists))


def check_split(num_rows: int, num_clients: int, *, what: str, min_rows: int = MIN_ROWS_PER_CLIENT) -> None:
    """Refuse a simulation whose ``num_rows`` cannot give each of ``num_clients`` ``min_rows`` rows.

    ``what`` says where the rows come from (it goes into the message).

    Raises
    ------
    ConfigError
        Naming ``simulation.num_clients``, the rows needed and available, and the largest count that fits.
    """
    if num_clients * min_rows <= num_rows:
        return
    fits = num_rows // min_rows
    raise ConfigError(
        f"simulation.num_clients={num_clients} needs at least {min_rows} rows per client "
        f"({num_clients * min_rows} rows), but {what} has {num_rows}: lower simulation.num_clients "
        f"to at most {fits}"
    )


def _check_counts(num_rows: int, num_partitions: int) -> None:
    if num_partitions < 1:
        raise ConfigError(f"the number of partitions must be >= 1, got {num_partitions}")
    if num_rows < num_partitions:
        raise ConfigError(f"cannot split {num_rows} rows among {num_partitions} clients")
