"""A metadata body read as it streams in: the same instances and texts however the bytes are chunked."""

from __future__ import annotations

import json
import random

import pytest

from cohort.harvest import MalformedMetadata, iter_instances


def _chunked(body: bytes, seed: int, largest: int = 64) -> list[bytes]:
    rng, chunks, i = random.Random(seed), [], 0
    while i < len(body):
        n = rng.randint(1, largest)
        chunks.append(body[i:i + n])
        i += n
    return chunks


def test_any_chunking_gives_each_instance_and_its_text_as_sent():
    instances = [{"00080018": {"vr": "UI", "Value": [f"1.2.{i}"]}, "00100010": {"vr": "PN", "Value": [
        {"Alphabetic": "Müller^Zoë"}]}, "00280030": {"vr": "DS", "Value": [0.25, 12345]}} for i in range(40)]
    # pretty-printed, non-ASCII (UTF-8 split across chunks), numbers ending right before a chunk boundary
    body = json.dumps(instances, indent=2, ensure_ascii=False).encode()
    texts = [json.dumps(i, indent=2, ensure_ascii=False) for i in instances]
    whole = list(iter_instances([body]))
    assert [i for i, _ in whole] == instances
    assert [" ".join(t.split()) for _, t in whole] == [" ".join(t.split()) for t in texts]
    for seed in range(30):
        assert list(iter_instances(_chunked(body, seed))) == whole, seed
    assert list(iter_instances(_chunked(body, 0, largest=1))) == whole  # one byte at a time


def test_instances_come_before_the_body_ends():
    """The first instance is yielded while the rest of the body has not arrived yet."""
    sent = []

    def chunks():
        for part in (b'[{"00080018": {"vr": "UI", "Value": ["1.1"]}},', b' {"00080018": ', b'{"vr": "UI"}}]'):
            sent.append(part)
            yield part

    stream = iter_instances(chunks())
    assert next(stream)[0]["00080018"]["Value"] == ["1.1"] and len(sent) == 1
    assert len(list(stream)) == 1 and len(sent) == 3


@pytest.mark.parametrize("body, message", [
    (b'[{"a": 1}, {"b": ', "truncated body"),
    (b'[{"a": 1}', "truncated body: the array ends after 1 instances"),
    (b'[{"a": "x\xc3', "not UTF-8"),
    (b'[{"a": 1}]]', "extra text"),
])
def test_a_body_cut_or_broken_anywhere_is_malformed_after_what_came_before(body, message):
    for seed in range(5):
        got = []
        with pytest.raises(MalformedMetadata, match=message):
            for instance, _ in iter_instances(_chunked(body, seed, largest=4)):
                got.append(instance)
        assert got in ([], [{"a": 1}])
