"""A table of result rows, unique by a key, recorded in O(1) per row and read back as one parquet file.

Used by every pipeline's driver-side tracking (``history.parquet`` of DCSOD, ``results.parquet`` of the text-VAE
sweep). Single writer. :meth:`JournaledTable.append` writes one JSON line to the journal ``<stem>.journal.jsonl``
beside the table (flushed and fsynced: a crash loses at most a torn last line, which was never acknowledged and
is dropped) and keeps the keys in memory; :meth:`JournaledTable.compact` merges the journal into the parquet
file (written to a temporary file and moved into place, then the journal is removed). :meth:`read` always
returns table + journal, so its callers never see the difference; ``pd.read_parquet`` on the file sees the
rows up to the last compaction (the pipelines compact at the end of every stage).

>>> table = JournaledTable("out/results.parquet", key=lambda row: (row["name"],))   # doctest: +SKIP
>>> table.append({"name": "a", "elbo": -3.5}); table.compact()                      # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.common.rundir import atomic_write


class JournaledTable:
    """Rows keyed by ``key(row)``; ``normalize(row)`` validates and coerces a row (one-line ``ValueError``);
    ``typed(frame)`` gives a frame its columns and dtypes (also for an empty table)."""

    def __init__(self, path: str | os.PathLike, key: Callable[[Mapping], Hashable],
                 normalize: Callable[[Mapping], dict] = dict,
                 typed: Callable[[pd.DataFrame], pd.DataFrame] = lambda df: df.reset_index(drop=True)) -> None:
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.stem + ".journal.jsonl")
        self.key, self.normalize, self.typed = key, normalize, typed
        self._table: tuple[tuple[int, int], pd.DataFrame] | None = None
        self._index_cache: dict[Hashable, dict] | None = None  # key -> the stored row

    def __getstate__(self) -> dict:  # shipped with Tune callbacks: no cached tables
        return {**self.__dict__, "_table": None, "_index_cache": None}

    def _parquet(self) -> pd.DataFrame:
        """The compacted table, parsed again only when the file's (mtime, size) changed."""
        if not self.path.exists():
            return self.typed(pd.DataFrame())
        stat = self.path.stat()
        signature = stat.st_mtime_ns, stat.st_size
        if self._table is None or self._table[0] != signature:
            self._table = signature, self.typed(pd.read_parquet(self.path))
        return self._table[1]

    def _journal_rows(self) -> list[dict]:
        if not self.journal.exists():
            return []
        rows = []
        with open(self.journal) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a torn last line from a crash mid-write: never acknowledged
                    break
        return rows

    def read(self) -> pd.DataFrame:
        """Every stored row, in the order appended, with the columns and dtypes of ``typed``."""
        table = self._parquet()
        stored = set(self.keys_of(table))
        pending: dict[Hashable, dict] = {}
        for row in self._journal_rows():  # a crash mid-compaction leaves rows in both: the table wins
            k = self.key(row)
            if k not in stored and k not in pending:
                pending[k] = row
        if not pending:
            return table.copy()
        rows = pd.DataFrame(list(pending.values()))
        return self.typed(pd.concat([table, rows], ignore_index=True) if len(table) else rows)

    def keys_of(self, df: pd.DataFrame) -> list[Hashable]:
        """The keys of a frame's rows, in row order."""
        return [self.key(row) for row in df.to_dict("records")]

    def _index(self) -> dict[Hashable, dict]:
        if self._index_cache is None:
            df = self.read()
            self._index_cache = dict(zip(self.keys_of(df), df.to_dict("records")))
        return self._index_cache

    def keys(self) -> set:
        """The keys of the stored rows."""
        return set(self._index())

    def get(self, key: Hashable) -> dict | None:
        """The stored row of ``key`` (as read back), or None."""
        return self._index().get(key)

    def append(self, row: Mapping[str, Any]) -> bool:
        """Validate and record one row; a row whose key is already stored is rejected (nothing is written) and
        ``False`` returned."""
        new = self.normalize(row)
        key = self.key(new)
        index = self._index()
        if key in index:
            return False
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        with open(self.journal, "a") as f:
            f.write(json.dumps(new, allow_nan=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        index[key] = new
        return True

    def _drop_torn_tail(self) -> None:
        """Cut a last line without its newline (a write cut short by a crash) before appending after it."""
        if not self.journal.exists() or self.journal.stat().st_size == 0:
            return
        with open(self.journal, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # rare: only after a crash, so reading the whole file is fine
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)

    def compact(self) -> None:
        """Merge the journal into the parquet file (atomic replace), then remove the journal. Idempotent; a
        crash in between leaves both, and :meth:`read` drops the journal rows the table already holds."""
        if not self.journal.exists():
            return
        df = self.read()
        atomic_write(self.path, lambda tmp: df.to_parquet(tmp, index=False))
        stat = self.path.stat()
        self._table = (stat.st_mtime_ns, stat.st_size), df
        self.journal.unlink()
