"""core.charts: what a reader needs on a chart is there (axes on round numbers, units, legends, thresholds)."""

import re

from core.charts import _nice_ticks, bar_chart_svg, heatmap_svg, line_chart_svg, sparkline_svg


def test_ticks_fall_on_round_numbers():
    assert _nice_ticks(0, 18.9) == [0, 5, 10, 15]
    assert _nice_ticks(0, 0.42) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert _nice_ticks(3, 3) == [3]


def test_line_chart_with_units_threshold_and_gaps():
    svg = line_chart_svg(
        {"p95": [(0, 4.0), (3600, None), (7200, 9.0)], "p50": [(0, 2.0), (7200, 3.0)]},
        title="Latency",
        y_label="milliseconds",
        thresholds=[(8.0, "2 × median")],
        y_range=(0, None),
        x_format=lambda x: f"{x / 3600:.0f}h",
    )
    assert "milliseconds" in svg
    assert "2 × median" in svg
    assert 'stroke-dasharray="2 3"' in svg  # the threshold line
    assert ">0h<" in svg
    assert ">2h<" in svg
    assert svg.count("<polyline") == 2  # a missing point is left out, not drawn at zero
    ticks = re.findall(r'text-anchor="end" fill="#374151">([^<]+)<', svg)
    assert ticks == ["0", "2", "4", "6", "8", "10"]  # from 0, stretched to a round top
    assert line_chart_svg({"x": [(0, None)]}, title="nothing") == ""


def test_bars_heatmap_and_sparkline():
    svg = bar_chart_svg(["no", "yes"], {"training": [0.7, 0.3], "live": [0.6, 0.4]}, title="mix", percent=True)
    assert svg.count("<title>") == 4
    assert "70%" in svg
    assert ">training<" in svg  # the legend
    assert bar_chart_svg([], {}, title="empty") == ""
    heat = heatmap_svg(
        ["age", "income"],
        ["10:00", "11:00"],
        {("age", "10:00"): (0.2, False, "age: fine"), ("income", "11:00"): (1.0, True, "income: drifted")},
        title="drift",
        legend="score against threshold",
    )
    assert heat.count("<path") == 1  # one drifted cell, crossed
    assert "not tested" in heat  # the two cells without a result
    assert "income: drifted" in heat
    assert "<polyline" in sparkline_svg([1, 3, 2], title="traffic")
    assert sparkline_svg([], title="none") == ""
