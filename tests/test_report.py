"""Result tables: split averaging and the side-by-side layout."""

import numpy as np
import pytest

from torchreid_fgdi.evaluation import format_split_table, result_from_json, result_to_json, split_summary


def test_split_summary_is_the_mean_and_spread_over_splits():
    per_split = [
        {"mAP": 0.5, "cmc": np.array([0.4, 0.6, 1.0])},
        {"mAP": 0.7, "cmc": np.array([0.6, 0.8, 1.0])},
        {"mAP": 0.9, "cmc": np.array([0.8, 1.0])},  # a smaller gallery: shorter CMC
    ]
    res = split_summary(per_split)
    assert res["mAP"] == pytest.approx(0.7) and res["mAP_std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    np.testing.assert_allclose(res["cmc"], [0.6, 0.8])
    assert res["rank1_std"] == pytest.approx(np.std([0.4, 0.6, 0.8]))
    table = format_split_table({"viper": res, "market1501": {"mAP": 0.3, "cmc": np.array([0.2])}})
    assert "| viper | 3 | 70.0 ± 16.3 | 60.0 ± 16.3 | 50.0 70.0 90.0 |" in table and "market1501" not in table
    back = result_from_json(result_to_json(res))
    assert back["mAP"] == res["mAP"] and len(back["splits"]) == 3
    np.testing.assert_allclose(back["splits"][2]["cmc"], [0.8, 1.0])
