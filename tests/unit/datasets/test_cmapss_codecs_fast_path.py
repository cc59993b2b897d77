"""decode_line's plain-ASCII fast path returns exactly what the validating path returns (or raises the
same PayloadError) on every input; bytearray input always takes the validating path."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from enginehub.datasets import codecs
from enginehub.datasets.codecs import PayloadError

GOOD = (
    "1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19 1.30 "
    "47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190"
)
TOKENS = ["0", "1", "12", "+", "-", ".", "9" * 20, "0" * 19 + "1", "1e5", "E", "inf", "nan", "9" * 400]
TOKENS += ["2147483647", "2147483648", "00", "1_0", "\u0661", " ", "\t", "\r", "\n", "\x0b"]


def _outcome(data: str | bytes | bytearray) -> tuple[str, object]:
    try:
        return "row", codecs.decode_line(data)
    except PayloadError as exc:
        return "error", str(exc)


@st.composite
def lines(draw: st.DrawFn) -> str:
    fields = GOOD.split()
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(fields) - 1))
        fields[i] = "".join(draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3)))
    if draw(st.booleans()):
        del fields[draw(st.integers(0, len(fields) - 1))]
    sep = draw(st.sampled_from([" ", "\t", " \t "]))
    head = draw(st.sampled_from(["", " ", "\t", "\r\n"]))
    tail = draw(st.sampled_from(["", "  ", "\n", "\r\n"]))
    return head + sep.join(fields) + tail


@settings(max_examples=400, deadline=None)
@given(lines())
@example(GOOD)
@example("1 1 " + " ".join(["1."] * 24))
@example("+1 1 " + " ".join([".5"] * 24))
@example("0000000000000000001 1 " + " ".join(["1"] * 24))
@example("1 1 " + " ".join(["9" * 400] * 24))
def test_fast_path_agrees_with_the_validating_path(line: str) -> None:
    reference = _outcome(bytearray(line.encode("utf-8")))
    assert _outcome(line) == reference
    assert _outcome(line.encode("utf-8")) == reference
