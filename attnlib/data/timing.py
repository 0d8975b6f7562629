"""Time how long a dataset takes to load, epoch by epoch (e.g. to see the preprocessing cache work)."""

from __future__ import annotations

import time

from torch.utils.data import DataLoader, Dataset

from attnlib.core.progress import tqdm


def time_epochs(dataset: Dataset, epochs: int = 2, batch_size: int = 16, num_workers: int = 0) -> list[float]:
    """Wall seconds to iterate the whole ``dataset`` once per epoch, in order, with a DataLoader."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for _ in tqdm(loader, desc=f"data epoch {epoch + 1}", leave=False):
            pass
        seconds.append(time.perf_counter() - start)
    return seconds
