"""Whatever chooses an architecture never sees the test split: every strategy, with every estimator that reads
data, is run with the test split's reads recorded."""

import pytest

from conftest import ROOT
from hwnas.cost.model import CostModel
from hwnas.learn.data import ImageSet
from hwnas.learn.loop import TrainConfig
from hwnas.search import STRATEGIES, Budget, Feasibility, SearchContext
from hwnas.search.estimators import make_estimator
from hwnas.search.executors import Executor
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table

MODEL = CostModel(Table.load(ROOT / "latency_tables" / "cpu-proxyless-32.json"))
REF = MODEL.predict(Arch.of(MODEL.space, MODEL.space.reference_choices())).latency_ms
OPTIONS = {"proxyless": {"epochs": 2, "warmup_epochs": 1, "loss": "add"}, "evolution": {"population": 2, "sample": 2},
           "memnet": {"neighbors": 2}, "mnas": {"batch": 2}, "random": {}}


@pytest.mark.parametrize("strategy, estimator", [("proxyless", "naswot"), ("random", "train"),
                                                 ("evolution", "supernet"), ("mnas", "naswot"),
                                                 ("memnet", "naswot")])
def test_no_search_decision_reads_the_test_split(monkeypatch, strategy, estimator):
    est = make_estimator(estimator, data="digits", resolution=32, seed=0, limit=64, space_id=MODEL.space.id,
                         train_config=TrainConfig(epochs=1, batch_size=32, device="cpu"))
    test_indices = set(est.dataset.test.indices.tolist())
    read = {"test": 0, "other": 0}
    original = ImageSet.__getitem__

    def recording(self, items):
        x, y = original(self, items)
        hit = set(self.indices[items].tolist() if not isinstance(items, int) else [int(self.indices[items])])
        read["test" if hit & test_indices else "other"] += 1
        return x, y

    monkeypatch.setattr(ImageSet, "__getitem__", recording)
    budget = Budget(latency_ms=0.8 * REF, memory_bytes=50e6 if strategy == "memnet" else None)
    ctx = SearchContext(Feasibility(MODEL, budget), est, Executor(), None, seed=0, max_evaluations=3)
    STRATEGIES[strategy](**OPTIONS[strategy]).run(ctx)
    assert read["other"] > 0 and read["test"] == 0, read
