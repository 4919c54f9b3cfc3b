"""The compute model behind every plan: 10·d_in·d_sae FLOPs per token and SAE."""

import pytest

from geomsae.study.cost import train_flops_per_token


def test_train_flops_per_token_counts_five_products_of_two_flops() -> None:
    # encoder forward, decoder forward, two decoder gradients, encoder weight gradient
    assert train_flops_per_token(512, 4096) == 5 * 2 * 512 * 4096
    with pytest.raises(ValueError, match=r"d_sae == 0, must be an integer >= 1"):
        train_flops_per_token(64, 0)
