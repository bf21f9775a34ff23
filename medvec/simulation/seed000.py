"""Seed 000's published figures, the reference the reproduction puts beside its own.

Seed 000 is the FL-RA paper the project started from (FedAvg over ResNet-50 with
fused attention, four medical image sets). Its Table 3 ("Impact of the number of
participants on the accuracy of the classification model") gives test accuracy in
percent of the local model and of the federated model for N = 5, 10, 20 and 50
participants; its Table 2 gives the settings: T = 20 global rounds, S = 10 local
updates, local batch size M = 16, lr 0.01, every participant in every round (K = 1).
"""

from __future__ import annotations

__all__ = ["SEED000_SETTINGS", "SEED000_TABLE3", "seed000_cell", "seed000_margin"]

# Seed 000, Table 3: dataset -> N -> (local, federated) test accuracy in percent.
# Keys are MedMNIST file stems; "covid19" is the COVID-CTset (not a MedMNIST set).
SEED000_TABLE3: dict[str, dict[int, tuple[float, float]]] = {
    "covid19": {5: (78.85, 83.46), 10: (75.54, 78.82), 20: (69.73, 75.57), 50: (62.17, 70.29)},
    "pneumoniamnist": {
        5: (86.21, 88.34),
        10: (82.07, 87.11),
        20: (77.26, 84.27),
        50: (70.69, 78.51),
    },
    "organsmnist": {5: (77.92, 79.64), 10: (75.85, 78.89), 20: (72.03, 76.25), 50: (63.87, 71.52)},
    "octmnist": {5: (78.84, 79.52), 10: (78.25, 79.68), 20: (75.26, 78.44), 50: (68.34, 74.83)},
}

# Seed 000, Table 2 (the same for every dataset).
SEED000_SETTINGS = {"rounds": 20, "local_updates": 10, "batch_size": 16, "lr": 0.01}


def seed000_cell(dataset: str, hospitals: int) -> tuple[float, float] | None:
    """(local, federated) accuracy in [0, 1] from Table 3, or None where it has no cell."""
    cell = SEED000_TABLE3.get(dataset.lower().removesuffix(".npz"), {}).get(hospitals)
    return None if cell is None else (cell[0] / 100, cell[1] / 100)


def seed000_margin(dataset: str, hospitals: int) -> float | None:
    """Federated minus local accuracy in points, or None where Table 3 has no cell."""
    cell = seed000_cell(dataset, hospitals)
    return None if cell is None else round(100 * (cell[1] - cell[0]), 2)
