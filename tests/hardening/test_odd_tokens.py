"""Tokens UTF-8 cannot hold (lone surrogates, from traces built by hand or by other tools) are
written as escapes: pages, reports and figures still save, as text."""

from __future__ import annotations

import attnscope as at

ODD = ("[CLS]", "hel\udce9lo", "<b>x</b>", "[SEP]")


def test_pages_and_figures_save_with_tokens_utf8_cannot_hold(embedded, tmp_path):
    trace = at.capture(embedded, "hello world").replace(tokens=ODD)
    page = at.head_view(trace).save(tmp_path / "view.html")
    report = at.report(trace, embedded).save(tmp_path / "report.html")
    figure = at.heatmap(trace).save(tmp_path / "head.svg")
    for path in (page, report, figure):
        text = path.read_bytes().decode("utf-8")  # valid UTF-8 throughout
        assert "\\udce9" in text
    assert "<b>x</b>" not in page.read_text(encoding="utf-8")  # markup stays text
