"""What a query engine gives the pooled comparison (``snapprof.fleet.pooled``).

An engine reads the dataset (``duck.DuckEngine``, ``dask_engine.DaskEngine``) and returns
small pandas frames: the captures table (one row per capture), run counts, and the
complete-run samples of each label *reduced* to distinct values with counts — the heavy
part (scanning, joining runs, refusing negative durations, grouping), done by the engine.
Everything after the reduction is shared: ``orderstats`` (DuckDB SQL on the reduced
frames) and ``pooled``, so both engines give the same figures by construction, and the
in-memory path's (tests/test_fleet_parity.py, tests/test_fleet_dask.py).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import pandas as pd

#: Columns of the frames an engine's ``reduce`` returns.
REDUCED = {
    # complete-run samples: metrics (kind "metric", k1 name), phase durations ("phase", k1
    # phase), device totals per run ("device", k1 device; value NULL: no callback timed),
    # slowest task of a name per run ("task", k1 stage, k2 comm; value NULL: no latency)
    "vals": ["kind", "k1", "k2", "label", "value", "cnt"],
    # (kind, name) seen in a label's complete runs (a phase even without a duration)
    "names": ["kind", "name", "label"],
    "refused": ["kind", "name", "label", "cnt"],             # negative durations left out
    "units": ["name", "label", "unit"],                      # first unit in pooled order
    "methods": ["kind", "name", "label", "method"],          # distinct methods
    # not_measured rows of the label's captures: cap (position in the label), in_complete
    "not_measured": ["label", "cap", "name", "reason", "in_complete"],
    # phases whose method says the clock jumped or went back (any run)
    "clocks": ["label", "cap", "phase", "jump", "back"],
}


@dataclass
class Reduced:
    vals: pd.DataFrame
    names: pd.DataFrame
    refused: pd.DataFrame
    units: pd.DataFrame
    methods: pd.DataFrame
    not_measured: pd.DataFrame
    clocks: pd.DataFrame


class Engine(abc.ABC):
    """What a pooled engine provides (DuckEngine, DaskEngine); duck.DuckEngine is the reference."""

    name = "engine"

    @abc.abstractmethod
    def captures(self) -> pd.DataFrame:
        """The captures table (layout.SCHEMAS['captures']), ordered by seq."""

    @abc.abstractmethod
    def run_counts(self) -> pd.DataFrame:
        """capture_id, status, failure_kind, cnt."""

    @abc.abstractmethod
    def reduce(self, labels: pd.DataFrame) -> Reduced:
        """``labels``: capture_id, label, cap (position of the capture in its label)."""

    def close(self) -> None:
        pass
