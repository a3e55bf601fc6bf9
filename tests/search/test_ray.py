"""--executor ray: evaluations as Ray tasks on a local cluster give the in-process result."""

import pytest
from test_search import LAT, TABLE

ray = pytest.importorskip("ray", reason="needs the ray package (pip install -e '.[ray]')")

from hwnas.search.run import SearchConfig, run_search  # noqa: E402


@pytest.mark.slow
def test_evolution_with_naswot_on_a_local_ray_cluster_matches_in_process(tmp_path):
    cfg = dict(table=str(TABLE), strategy="evolution", latency_ms=LAT, estimator="naswot", evaluations=8,
               final_epochs=0, limit=96, seed=3, options={"population": 4, "sample": 2})
    local = run_search(SearchConfig(**cfg), tmp_path / "local", progress=False)
    try:
        remote = run_search(SearchConfig(**cfg, executor="ray"), tmp_path / "ray", progress=False)
        assert ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 1  # a real cluster ran them
    finally:
        ray.shutdown()
    assert str(remote.arch) == str(local.arch)
    rows = [(tmp_path / d / "candidates.jsonl").read_text().splitlines() for d in ("local", "ray")]
    import json

    a, b = ([json.loads(line) for line in r] for r in rows)
    assert [r["arch"] for r in a] == [r["arch"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], rel=1e-6)
