"""Row stores: a split's [N, D] binary rows read from a memory-mapped file as they are asked for,
so no split is ever held whole as float32 (4 GB of uint8 rows would be 16 GB as float32).

``rows[index]`` (an int, a slice or an array of row numbers) is a float32 copy of those rows,
as indexing an in-memory float32 split gives, so the trainer and the evaluation read either kind
the same way. After each read the mapping's pages are dropped from this process: the kernel keeps
the file in its page cache, but resident memory stays at one batch however large the file.
"""

import mmap
from pathlib import Path

import numpy as np

Index = int | slice | np.ndarray


def drop_pages(array: np.ndarray) -> None:
    """Unmap the pages of the memory-mapped ``array`` this process has touched; reading them
    again faults them back from the page cache. A no-op for arrays in memory."""
    if isinstance(array.base, mmap.mmap):
        array.base.madvise(mmap.MADV_DONTNEED)


class RowStore:
    """Binary rows on disk, read in batches; subclasses say how raw rows become float32."""

    dim: int

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: Index) -> np.ndarray:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def take(self, indices: np.ndarray) -> "RowStore":
        """The rows ``indices`` as a store of their own, read lazily like this one."""
        return Subset(self, np.asarray(indices, dtype=np.int64))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """Every row in memory, for numpy's functions on small splits; training never calls it."""
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype, copy=False)


class MappedRows(RowStore):
    """An [N, D] array file of 0/1 numbers (any dtype), memory-mapped read-only."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.dim = int(array.shape[1])
        if isinstance(array.base, mmap.mmap):
            array.base.madvise(mmap.MADV_RANDOM)  # an epoch reads rows in random order

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Index) -> np.ndarray:
        rows = self.array[index].astype(np.float32)
        drop_pages(self.array)
        return rows


def packed_width(dim: int) -> int:
    """Bytes per row of D entries packed 1 bit each."""
    return -(-dim // 8)


class PackedRows(MappedRows):
    """Rows packed 1 bit per entry (``np.packbits`` along each row, big-endian bit order): an
    [N, ceil(D / 8)] uint8 file, unpacked per read."""

    def __init__(self, path: Path, num_rows: int, dim: int):
        super().__init__(
            np.memmap(path, dtype=np.uint8, mode="r", shape=(num_rows, packed_width(dim)))
        )
        self.dim = dim

    def __getitem__(self, index: Index) -> np.ndarray:
        bits = np.unpackbits(self.array[index], axis=-1, count=self.dim)
        drop_pages(self.array)
        return bits.astype(np.float32)


class Subset(RowStore):
    """Some rows of another store (a split of one file, the validation rows kept for training)."""

    def __init__(self, base: RowStore, indices: np.ndarray):
        self.base, self.indices, self.dim = base, indices, base.dim

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Index) -> np.ndarray:
        return self.base[self.indices[index]]


Rows = np.ndarray | RowStore


def subset(rows: Rows, indices: np.ndarray) -> Rows:
    """``rows[indices]`` that stays on disk when ``rows`` is on disk."""
    return rows.take(indices) if isinstance(rows, RowStore) else rows[indices]
