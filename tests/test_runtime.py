"""Run settings: set for the duration of a run, restored afterwards, also on error."""

from __future__ import annotations

import pytest
import torch

from m3sa.config import Config
from m3sa.runtime import Runtime, run_settings, torch_settings


def _state() -> tuple[int, bool, bool]:
    return torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.cudnn_sdp_enabled()


def test_torch_settings_are_set_inside_and_restored_after_an_error():
    before = _state()
    assert before[1:] == (False, True)  # torch's defaults
    with pytest.raises(RuntimeError, match="boom"):
        with torch_settings(1, deterministic=True, cudnn_attention=False):
            assert _state() == (1, True, False)
            raise RuntimeError("boom")
    assert _state() == before


@pytest.mark.parametrize("device, deterministic", [("cpu", True), ("cuda", False)])
def test_a_training_run_turns_cudnn_attention_off_and_cpu_kernels_deterministic(device, deterministic):
    # cuDNN attention builds a plan per new sequence length (seconds each on an H200)
    before = _state()
    with run_settings(Config(), Runtime(torch.device(device))):
        assert _state()[1:] == (deterministic, False)
    assert _state() == before
