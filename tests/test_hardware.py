"""bf16 is flagged as slow exactly on CPUs that lack native bf16 instructions."""

import warnings

import pytest

from conceptlab.hardware import native_bf16, warn_if_slow_bf16
from conceptlab.training.loop import TrainConfig

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16"}


def test_native_bf16_reads_the_flags():
    assert native_bf16(AVX2_ONLY) is False
    assert native_bf16(SAPPHIRE_RAPIDS) is True
    assert native_bf16(frozenset({"avx512f"})) is False  # AVX-512 without its BF16 extension


def test_warning_names_the_argument_and_the_fix():
    with pytest.warns(UserWarning, match=r"--mixed-precision=bf16.*--mixed-precision no"):
        assert warn_if_slow_bf16("--mixed-precision=bf16", AVX2_ONLY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_slow_bf16("--mixed-precision=bf16", SAPPHIRE_RAPIDS)


def test_loop_config_warns_on_this_machine_only_if_it_lacks_bf16():
    slow = native_bf16() is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TrainConfig(mixed_precision="bf16").check()
    assert any("native bf16" in str(w.message) for w in caught) == slow
