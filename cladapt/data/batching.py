"""Turn datasets into device batches.

In-memory ``TensorDataset``s (the embedded data) take a fast path: the tensors move to the device
once and batches are slices of them, with no per-sample Python work. Any other dataset goes through
a ``DataLoader`` with pinned memory and non-blocking copies.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

# Device copies live as long as their dataset: freed when the stream is dropped.
_DEVICE_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _on_device(ds: TensorDataset, device: torch.device) -> tuple[torch.Tensor, ...]:
    if ds.tensors[0].device == device:
        return ds.tensors
    per_device = _DEVICE_COPIES.setdefault(ds, {})
    if str(device) not in per_device:
        per_device[str(device)] = tuple(t.to(device) for t in ds.tensors)
    return per_device[str(device)]


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 image tensors (kept that way in memory: 4x smaller, 4x less to copy to the GPU)
    become floats in [0, 1] on the device."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def num_batches(ds: Dataset, batch_size: int, drop_last: bool = False) -> int:
    n = len(ds)  # type: ignore[arg-type]
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate(
    ds: Dataset,
    batch_size: int,
    device: torch.device,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
    order: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(x, y)`` batches on ``device``; ``y`` is None for unlabelled datasets. ``order``:
    the sample indices to visit, in that order (replaces ``shuffle``)."""
    if order is not None:
        shuffle = False
    if isinstance(ds, TensorDataset):
        tensors = _on_device(ds, device)
        n = tensors[0].shape[0]
        if order is not None:
            order = order.to(device)
            n = order.shape[0]  # a subset, in that order
        elif shuffle:
            order = torch.randperm(n, generator=generator).to(device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                parts = [t[start : start + batch_size] for t in tensors]
            else:
                idx = order[start : start + batch_size]
                parts = [t.index_select(0, idx) for t in tensors]
            yield as_float_images(parts[0]), (parts[1] if len(parts) > 1 else None)
        return
    if order is not None:
        ds = Subset(ds, order.tolist())
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    for item in loader:
        if isinstance(item, (tuple, list)):
            x = as_float_images(item[0].to(device, non_blocking=True))
            y = item[1].to(device, non_blocking=True) if len(item) > 1 else None
        else:
            x, y = item.to(device, non_blocking=True), None
        yield x, y


def cycle(
    ds: Dataset, batch_size: int, device: torch.device, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Endless shuffled batches (both sides of UDA training); the last partial batch of each
    pass is dropped unless the dataset is smaller than one batch."""
    if len(ds) == 0:  # type: ignore[arg-type]
        raise ValueError("cannot cycle over an empty dataset")
    drop = len(ds) >= batch_size  # type: ignore[arg-type]
    while True:
        yield from iterate(
            ds, batch_size, device, shuffle=True, generator=generator, drop_last=drop
        )


class _ImagesOnly(Dataset):
    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.ds[i]
        return item[0] if isinstance(item, (tuple, list)) else item


def images_only(ds: Dataset) -> Dataset:
    """The same images without labels (the unlabelled target side of UDA)."""
    if isinstance(ds, TensorDataset):
        return ds if len(ds.tensors) == 1 else TensorDataset(ds.tensors[0])
    return _ImagesOnly(ds)


def concat_datasets(datasets: list[Dataset]) -> Dataset:
    """Concatenate; tensor datasets stay tensor datasets (the device-resident fast path)."""
    from torch.utils.data import ConcatDataset

    if all(isinstance(d, TensorDataset) for d in datasets):
        n = len(datasets[0].tensors)
        return TensorDataset(*(torch.cat([d.tensors[i] for d in datasets]) for i in range(n)))
    return ConcatDataset(datasets)
