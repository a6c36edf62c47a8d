"""cohort/harvest/stream.py: every outcome and whole message, for a body in one chunk and cut at every byte.

The char positions in the expected messages are found with ``str.index`` on the body written here,
never with the reader's own bookkeeping.
"""

from __future__ import annotations

import math

import pytest

from cohort.harvest.metadata import MalformedMetadata
from cohort.harvest.stream import iter_instances, parse_body, split_body


def _chunkings(body: bytes) -> list[list[bytes]]:
    return [[body], [body[i:i + 1] for i in range(len(body))], [body[:len(body) // 2], b"", body[len(body) // 2:]]]


def _all(chunks):
    return list(iter_instances(chunks))


@pytest.mark.parametrize(("body", "expected"), [
    (b"", []), (b"  \n\t ", []), (b"[]", []), (b" [ \r\n ] \n", []),
    (b'{"a": 1} ', [({"a": 1}, '{"a": 1}')]),
    (b'[ {"a": 1} ,\n{"b" : "\xc3\xa9"}]', [({"a": 1}, '{"a": 1}'), ({"b": "\u00e9"}, '{"b" : "\u00e9"}')]),
    (b'[{"n": 12.5e3},{"m": [1, 22]}]', [({"n": 12500.0}, '{"n": 12.5e3}'), ({"m": [1, 22]}, '{"m": [1, 22]}')]),
])
def test_instances_and_their_text_for_any_chunking(body, expected):
    for chunks in _chunkings(body):
        assert _all(chunks) == expected
    assert split_body(body) == expected and split_body(body.decode()) == expected
    assert parse_body(body) == [instance for instance, _ in expected]


@pytest.mark.parametrize(("body", "message"), [
    (b'{"a":1} x', "extra text after the JSON array at char 8"),
    (b'[] x', "extra text after the JSON array at char 3"),
    (b'[{"a":1}] ]', "extra text after the JSON array at char 10"),
    (b'5', "expected a JSON array of instances, got a JSON int"),
    (b'"s"', "expected a JSON array of instances, got a JSON str"),
    (b'nul', "invalid JSON: Expecting value at char 0 of 3"),
    (b'[{"a":1}, 5]', "item 1 of the array is a JSON int, not an object"),
    (b'[[1]]', "item 0 of the array is a JSON list, not an object"),
    (b'[{"a":1},', "truncated body: the array ends after 1 instances (char 9)"),
    (b'[{"a":1},  ', "truncated body: the array ends after 1 instances (char 11)"),
    (b'[{"a":1}', "truncated body: the array ends after 1 instances (char 8)"),
    (b'[', "truncated body: the array ends after 0 instances (char 1)"),
    (b'[{"a":1} {"b":2}]', "invalid JSON: expected ',' or ']' after item 0 of the array at char 9"),
    (b'[{"a":1},{"b":2};', "invalid JSON: expected ',' or ']' after item 1 of the array at char 16"),
    (b'[{"a":', "truncated body: Expecting value at char 6 of 6"),
    (b'[{"a":  ', "truncated body: Expecting value at char 8 of 8"),
    (b'[{"a":"xy', "truncated body: Unterminated string starting at at char 6 of 9"),
    (b'[{"a":1,}]', "invalid JSON: Expecting property name enclosed in double quotes at char 8 of 10"),
    (b'[{"a":tru}]', "invalid JSON: Expecting value at char 6 of 11"),
])
def test_malformed_bodies_for_any_chunking(body, message):
    for chunks in _chunkings(body):
        with pytest.raises(MalformedMetadata) as err:
            _all(chunks)
        assert str(err.value) == message, chunks


def test_a_number_split_across_chunks_is_read_whole():
    with pytest.raises(MalformedMetadata, match="^expected a JSON array of instances, got a JSON float$"):
        _all([b"1", b".5"])
    with pytest.raises(MalformedMetadata, match="^expected a JSON array of instances, got a JSON int$"):
        _all([b"1", b"2", b"3 "])


def test_positions_count_from_the_start_of_the_body_after_the_buffer_is_trimmed():
    text = '[{"a":1},{"b":2},{"c":3} x]'
    chunks = [b'[{"a":1},', b'{"b":2},', b'{"c":3} x]']
    with pytest.raises(MalformedMetadata) as err:
        _all(chunks)
    assert str(err.value) == f"invalid JSON: expected ',' or ']' after item 2 of the array at char {text.index('x')}"
    text = '[{"a":1},{"b":2},{"c":3},{"d":?}]'
    with pytest.raises(MalformedMetadata) as err:
        _all([text[i:i + 4].encode() for i in range(0, len(text), 4)])
    assert str(err.value) == f"invalid JSON: Expecting value at char {text.index('?')} of {len(text)}"


def test_bytes_that_are_not_utf8():
    with pytest.raises(MalformedMetadata) as err:
        _all([b'[{"a":', b'"\xff"}]'])
    assert str(err.value) == "body is not UTF-8 (invalid start byte near char 6)"
    with pytest.raises(MalformedMetadata) as err:
        _all([b'[{"a":"\xff"}]'])
    assert str(err.value) == "body is not UTF-8 (invalid start byte near char 0)"
    with pytest.raises(MalformedMetadata) as err:
        _all([b'[{"a":"', b"\xc3"])
    assert str(err.value) == "body is not UTF-8 (unexpected end of data at its end)"
    assert _all([b'[{"a":"\xc3', b'\xa9"}]']) == [({"a": "\u00e9"}, '{"a":"\u00e9"}')]


def test_nested_too_deeply():
    body = b"[" + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"]"
    with pytest.raises(MalformedMetadata, match=r"^JSON nested too deeply to read \(at char 1\)$"):
        _all([body])


def test_instances_come_one_by_one_before_the_body_ends():
    def chunks():
        yield b'[{"a":1},'
        raise AssertionError("read past the first instance before it was yielded")

    assert next(iter_instances(chunks())) == ({"a": 1}, '{"a":1}')


# -- the linear-work and bounded-memory guarantees, counted through the decoder the reader calls ----------------
class _CountingDecoder:
    """The standard library's decoder, recording the buffer length and position of each decode attempt."""

    def __init__(self) -> None:
        import json

        self.decoder = json.JSONDecoder()
        self.calls: list[tuple[int, int]] = []
        #: Indexes in ``calls`` of the attempts that found the value incomplete.
        self.failed: list[int] = []

    def raw_decode(self, s, idx=0):
        self.calls.append((len(s), idx))
        try:
            found = self.decoder.raw_decode(s, idx)
        except ValueError:
            self.failed.append(len(self.calls) - 1)
            raise
        return found


@pytest.fixture
def decoder(monkeypatch):
    import cohort.harvest.stream as stream

    counting = _CountingDecoder()
    monkeypatch.setattr(stream, "_DECODER", counting)
    return counting


def _pulled(body: bytes, size: int, first: int = 0):
    """Chunks of ``size`` bytes (after one of ``first`` bytes, if given), and a list that holds how many bytes were
    handed over so far."""
    count = [0]

    def chunks():
        if first:
            count[0] = first
            yield body[:first]
        for i in range(first, len(body), size):
            count[0] = min(len(body), i + size)
            yield body[i:i + size]

    return chunks(), count


def _instances_of_growing_size(n: int) -> list[str]:
    return ['{"k": "' + "x" * (7 * i + 3) + '"}' for i in range(n)]


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_work_is_linear_and_reading_ahead_and_memory_are_bounded_however_the_chunks_fall(decoder, size):
    """The documented guarantees, with bounds a reader doubling its buffer keeps and a slower or greedier one breaks:
    after a failed try the unread text has at least doubled before the next (until the body ends); the characters
    handed to the decoder over all attempts stay under 4x the body; an instance is yielded before more than its own
    length plus one chunk was read past its end; the buffer never holds more than twice the longest instance plus
    two chunks."""
    instances = _instances_of_growing_size(60)
    body = ("[" + ", ".join(instances) + "]").encode()
    chunks, pulled = _pulled(body, size)
    ends, at = [], 0
    for text in instances:  # where each instance ends in the body, found by searching it
        at = body.index(text.encode(), at) + len(text)
        ends.append(at)
    whole = []  # per attempt: was the whole body handed over by then
    for (instance, text), expected, end in zip(iter_instances(chunks), instances, ends):
        assert text == expected
        assert pulled[0] - end < len(text) + size, (len(text), pulled[0] - end)
        whole += [pulled[0] == len(body)] * (len(decoder.calls) - len(whole))
    for i in decoder.failed:  # the next try of the same instance: twice the unread text at least
        if i + 1 < len(whole) and not whole[i + 1]:
            (length, pos), (next_length, next_pos) = decoder.calls[i], decoder.calls[i + 1]
            assert next_length - next_pos >= 2 * (length - pos), (i, decoder.calls[i:i + 2])
    assert sum(length - pos for length, pos in decoder.calls) < 4 * len(body)
    longest = max(len(text) for text in instances)
    assert max(length for length, _ in decoder.calls) <= 2 * longest + 2 * size
    attempts_per_instance = len(decoder.calls) / len(instances)
    assert attempts_per_instance <= math.log2(longest) + 2


def test_a_long_instance_after_short_ones_in_one_chunk_is_tried_again_only_once_its_text_doubled(decoder):
    """The first chunk holds short instances (2/5 of it) and the start of a long one, the rest comes byte by byte:
    the reader is then positioned far into its buffer, and must still wait for the unread text to double."""
    short = ['{"s": %d}' % i for i in range(40)]
    long = '{"l": "' + "y" * 4000 + '"}'
    body = ("[" + ",".join(short) + "," + long + "]").encode()
    start = body.index(b'{"l"')
    first = start * 5 // 2  # the short instances are 2/5 of the first chunk
    chunks, pulled = _pulled(body, 1, first)
    found = [text for _, text in iter_instances(chunks)]
    assert found == [*short, long]
    tries = decoder.calls[len(short):]
    for (length, pos), (next_length, next_pos) in zip(tries, tries[1:-1]):
        assert next_length - next_pos >= 2 * (length - pos), tries
    assert sum(length - pos for length, pos in tries) < 4 * len(long)
