"""A DICOM JSON metadata body, one instance at a time, as its bytes arrive.

A series' metadata is one JSON array of instances (PS3.18 F.2); IDC has series
of 90,000 instances, hundreds of MB of JSON. :func:`iter_instances` reads the
array from an iterable of byte chunks (a streamed HTTP response) and yields
each instance with its own JSON text, exactly as sent, holding in memory only
the undecoded rest of the current chunk and one instance.

Each instance is decoded with the standard library's C scanner
(``JSONDecoder.raw_decode``). When an instance is not yet complete the buffer
is grown to at least twice its size before the next try, so the work stays
linear in the body however the chunks fall. ijson was considered: it yields
parsed values but not the text as sent, and it would be a new dependency.

A body that is not a JSON array of objects raises :class:`MalformedMetadata`
(a lone object is accepted as one instance), at the point where it stops
being one; what was yielded before is the caller's to discard.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

from .metadata import MalformedMetadata

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\r\n"


def parse_body(body: bytes | str) -> list[dict[str, Any]]:
    """The instances of a DICOM JSON metadata body (an array; a lone object is accepted)."""
    return [instance for instance, _ in split_body(body)]


def split_body(body: bytes | str) -> list[tuple[dict[str, Any], str]]:
    """Each instance of a whole metadata body with its own JSON text, exactly as the server sent it."""
    return list(iter_instances([body.encode() if isinstance(body, str) else body]))


def iter_instances(chunks: Iterable[bytes]) -> Iterator[tuple[dict[str, Any], str]]:
    """Each instance of a metadata body given as byte chunks, with its JSON text, as soon as it is complete."""
    yield from _Reader(iter(chunks)).instances()


class _Reader:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.offset = 0  # characters dropped from the front of buf
        self.eof = False

    # -- buffer -------------------------------------------------------------
    def _more(self) -> bool:
        """Append the next chunk's text; False at the end of the body."""
        if self.eof:
            return False
        for chunk in self.chunks:
            try:
                text = self.utf8.decode(chunk)
            except UnicodeDecodeError as exc:
                raise MalformedMetadata(f"body is not UTF-8 ({exc.reason} near char {self._at(len(self.buf))})") \
                    from None
            if text:
                if self.pos > len(self.buf) // 2:  # drop what was read, so the buffer stays one instance long
                    self.offset += self.pos
                    self.buf, self.pos = self.buf[self.pos:], 0
                self.buf += text
                return True
        try:
            self.buf += self.utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise MalformedMetadata(f"body is not UTF-8 ({exc.reason} at its end)") from None
        self.eof = True
        return False

    def _peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the body), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos:self.pos + 1]

    def _value(self) -> tuple[Any, str]:
        """Decode the JSON value at pos, reading more of the body until it is complete."""
        want = 0
        while True:
            if len(self.buf) - self.pos >= want or self.eof:
                try:
                    value, end = _DECODER.raw_decode(self.buf, self.pos)
                except json.JSONDecodeError as exc:
                    if self.eof:
                        raise self._error(exc) from None
                    want = 2 * (len(self.buf) - self.pos) + 1
                except RecursionError:  # deeper than Python's decoder goes: the series is malformed, the run goes on
                    raise MalformedMetadata(f"JSON nested too deeply to read (at char {self._at(self.pos)})") from None
                else:
                    # a number at the end of the buffer may go on in the next chunk
                    if end < len(self.buf) or self.eof or not isinstance(value, (int, float)):
                        text = self.buf[self.pos:end]
                        self.pos = end
                        return value, text
                    want = len(self.buf) - self.pos + 1
            if not self._more() and len(self.buf) - self.pos < want:
                want = 0  # end of body: one last try says what is wrong

    def _at(self, pos: int) -> int:
        return self.offset + pos

    def _error(self, exc: json.JSONDecodeError) -> MalformedMetadata:
        cut = exc.pos >= len(self.buf.rstrip()) or exc.msg.startswith("Unterminated string")
        return MalformedMetadata(f"{'truncated body' if cut else 'invalid JSON'}: {exc.msg} at char "
                                 f"{self._at(exc.pos)} of {self._at(len(self.buf))}")

    # -- grammar ------------------------------------------------------------
    def instances(self) -> Iterator[tuple[dict[str, Any], str]]:
        first = self._peek()
        if first == "":
            return
        if first == "{":
            instance, text = self._value()
            self._end()
            yield instance, text
            return
        if first != "[":
            value = self._value()[0]  # raises for what is not JSON at all
            raise MalformedMetadata(f"expected a JSON array of instances, got a JSON {type(value).__name__}")
        self.pos += 1
        count = 0
        if self._peek() == "]":
            self.pos += 1
            self._end()
            return
        while True:
            if self._peek() == "":
                raise MalformedMetadata(f"truncated body: the array ends after {count} instances "
                                        f"(char {self._at(self.pos)})")
            instance, text = self._value()
            if not isinstance(instance, dict):
                raise MalformedMetadata(f"item {count} of the array is a JSON {type(instance).__name__}, "
                                        "not an object")
            yield instance, text
            count += 1
            nxt = self._peek()
            if nxt == ",":
                self.pos += 1
            elif nxt == "]":
                self.pos += 1
                self._end()
                return
            elif nxt == "":
                raise MalformedMetadata(f"truncated body: the array ends after {count} instances "
                                        f"(char {self._at(self.pos)})")
            else:
                raise MalformedMetadata(f"invalid JSON: expected ',' or ']' after item {count - 1} of the array "
                                        f"at char {self._at(self.pos)}")

    def _end(self) -> None:
        if self._peek() != "":
            raise MalformedMetadata(f"extra text after the JSON array at char {self._at(self.pos)}")
