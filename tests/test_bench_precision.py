"""The fp32/bf16 columns of the benches (bench/precision_columns.py): the --precision list, the ABBA
order of rounds, and the bf16/fp32 speed ratio of rates and of times."""

from __future__ import annotations

import pytest

from bench.precision_columns import headers, parse_precisions, round_order, side_by_side
from common import precision
from common.cpuinfo import cpu_model


def test_precision_list_is_resolved_deduplicated_and_checked(monkeypatch):
    assert parse_precisions("fp32,bf16") == ["fp32", "bf16"]
    assert parse_precisions(" bf16 , fp32,bf16,") == ["bf16", "fp32"]
    monkeypatch.delenv(precision.AUTO_ENV)  # conftest pins auto to fp32 for the rest of the suite
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ())
    assert parse_precisions("fp32,auto", "cpu") == ["fp32"]  # auto is fp32 without AMX / AVX512-BF16
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ("amx_bf16",))
    assert parse_precisions("fp32,auto", "cpu") == ["fp32", "bf16"]
    with pytest.raises(ValueError, match="'fp16'"):
        parse_precisions("fp32,fp16")
    with pytest.raises(ValueError, match="at least one"):
        parse_precisions(" , ")


def test_rounds_alternate_the_order():
    assert [round_order(["fp32", "bf16"], r) for r in range(3)] == [
        ["fp32", "bf16"],
        ["bf16", "fp32"],
        ["fp32", "bf16"],
    ]
    assert round_order(["bf16"], 1) == ["bf16"]


def test_speed_ratio_of_rates_and_of_times():
    both = ["fp32", "bf16"]
    assert headers("img/s", both) == ["img/s fp32", "img/s bf16", "bf16/fp32 speed"]
    assert side_by_side({"fp32": 10.0, "bf16": 25.0}, both) == ["10.0", "25.0", "2.50x"]  # rates: bf16 / fp32
    assert side_by_side({"fp32": 10.0, "bf16": 25.0}, both, "{:.0f}".format, time_like=True) == ["10", "25", "0.40x"]
    assert side_by_side({"fp32": 10.0}, both) == ["10.0", "-", "-"]  # a precision not measured: no ratio
    assert headers("img/s", ["fp32"]) == ["img/s fp32"]  # one precision: no ratio column
    assert side_by_side({"fp32": 10.0}, ["fp32"]) == ["10.0"]


def test_cpu_model_reads_the_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n")
    assert cpu_model(str(info)) == "AMD EPYC 7B13"
    assert cpu_model(str(tmp_path / "missing")) == ""
