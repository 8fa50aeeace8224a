"""An index saved to and loaded from a real S3 server (weed mini) through the storage layer."""

from __future__ import annotations

import numpy as np
import pytest

from pxflow.pipelines.io import storage
from pxflow.pipelines.retrieval import IndexData, build_index, remove_index
from tests.test_retrieval import clustered


@pytest.mark.parametrize("index_type", ["Flat", "HNSW32"])
def test_index_round_trips_through_s3(s3_server, index_type):
    features, labels = clustered(400, seed=3)
    built = remove_index([5, 7], build_index(features, labels, index_type=index_type, metric_type="IP"))
    prefix = s3_server.unique_prefix(f"indexes/{index_type}")
    built.save(prefix)
    names = sorted(info.uri.rsplit("/", 1)[-1] for info in storage.list_objects(prefix))
    assert {"vector.index", "id_map.yaml"} <= set(names)
    assert not [n for n in names if n.startswith(".tmp")]

    loaded = IndexData.load(prefix)
    queries = features[:50]
    want_scores, want_ids = built.search(queries, 5)
    got_scores, got_ids = loaded.search(queries, 5)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)
    assert 5 not in got_ids and 7 not in got_ids  # removals (tombstones for HNSW) survive the round trip
    assert loaded.id_map == built.id_map
