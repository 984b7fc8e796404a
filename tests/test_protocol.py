"""Wire codec: round trips, and garbage never raises anything but ProtocolError."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import typing

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh import const
from mesh.errors import ProtocolError, VersionMismatch
from mesh.wire import protocol
from mesh.wire.protocol import MESSAGES, Ping, Place, Result, Submit

from .fuzzwire import frames

texts = st.text(max_size=40)
ints = st.integers(-(2**40), 2**40)


def _instance(cls: type[protocol.Message], draw: st.DrawFn) -> protocol.Message:
    kwargs = {}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if hint is str:
            kwargs[f.name] = draw(texts)
        elif hint is int:
            kwargs[f.name] = draw(ints)
        elif hint is float:
            kwargs[f.name] = draw(st.floats(allow_nan=False, allow_infinity=False))
        elif hint is bool:
            kwargs[f.name] = draw(st.booleans())
    return cls(**kwargs)


@st.composite
def messages(draw: st.DrawFn) -> protocol.Message:
    cls = draw(st.sampled_from(sorted(MESSAGES.values(), key=lambda c: c.t)))
    return _instance(cls, draw)


@given(messages())
def test_round_trip(msg: protocol.Message) -> None:
    """Every message round-trips, unless it carries values no real peer sends (refused as garbage)."""
    try:
        protocol._sane(msg)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            protocol.decode(protocol.encode(msg))
        return
    assert protocol.decode(protocol.encode(msg)) == msg


def test_insane_values_are_refused() -> None:
    from mesh.wire.protocol import Heartbeat, Ready

    ok = Heartbeat(node_id="a", host="h", task_port=5555, term=3)
    assert protocol.decode(protocol.encode(ok)) == ok
    for bad in (
        dataclasses.replace(ok, task_port=70000),
        dataclasses.replace(ok, term=2**40),
        dataclasses.replace(ok, node_id=""),
        Ready(credits=10**9),
    ):
        with pytest.raises(ProtocolError):
            protocol.decode(protocol.encode(bad))


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        protocol.decode(data)


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.none(), ints, st.text(), st.lists(ints))))
def test_valid_msgpack_of_wrong_shape(body: dict[str, object]) -> None:
    for extra in ({}, {"v": const.PROTOCOL_VERSION, "t": "submit"}, {"v": const.PROTOCOL_VERSION, "t": "result"}):
        with contextlib.suppress(ProtocolError):
            protocol.decode(msgpack.packb({**body, **extra}))


@given(messages(), st.integers(0, 200))
def test_truncated_messages(msg: protocol.Message, cut: int) -> None:
    data = protocol.encode(msg)
    with contextlib.suppress(ProtocolError):
        protocol.decode(data[: min(cut, len(data) - 1)])


def test_wrong_field_type_is_refused() -> None:
    data = msgpack.packb({"v": const.PROTOCOL_VERSION, "t": "submit", "task_id": 5})
    with pytest.raises(ProtocolError, match="task_id"):
        protocol.decode(data)


def test_version_mismatch_names_both_versions() -> None:
    data = msgpack.packb({"v": 99, "t": "ping"})
    with pytest.raises(VersionMismatch, match=f"99.*{const.PROTOCOL_VERSION}"):
        protocol.decode(data)


def test_oversized_header_refused() -> None:
    with pytest.raises(ProtocolError, match="limit"):
        protocol.decode(b"\x00" * (const.MAX_HEADER_BYTES + 1))


def test_unknown_fields_are_ignored_and_missing_get_defaults() -> None:
    data = msgpack.packb({"v": const.PROTOCOL_VERSION, "t": "submit", "task_id": "a", "future": [1, 2]})
    assert protocol.decode(data) == Submit(task_id="a")


def test_frames_count_checked() -> None:
    header = protocol.encode(Ping(1))
    assert protocol.decode_frames([header]) == [(Ping(1), [])]
    with pytest.raises(ProtocolError, match="data frames"):
        protocol.decode_frames([header, b"x"])
    with pytest.raises(ProtocolError, match="frames"):
        protocol.decode_frames([header] * (const.MAX_FRAMES + 1))
    with pytest.raises(ProtocolError, match="empty"):
        protocol.decode_frames([])


def test_a_bundle_of_messages_without_data_frames_is_one_frame() -> None:
    msgs = [Submit(task_id=f"t{i}", size=i) for i in range(3)] + [Place("t0", "n", "h:1")]
    frame = protocol.encode_bundle(msgs)
    assert protocol.decode_frames([frame]) == [(m, []) for m in msgs]
    assert protocol.encode_bundle(msgs[:1]) == protocol.encode(msgs[0])  # one message goes alone
    assert protocol.decode_bundle(protocol.encode(msgs[0])) == msgs[:1]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "a bundle of 0"),
        ([{"v": const.PROTOCOL_VERSION, "t": "ping"}], "a bundle of 1"),
        ([{"v": const.PROTOCOL_VERSION, "t": "ping"}] * (const.BUNDLE_MAX + 1), "a bundle of"),
        ([{"v": const.PROTOCOL_VERSION, "t": "ping"}, 7], "holds a int"),
        (
            [{"v": const.PROTOCOL_VERSION, "t": "ping"}, [{"v": const.PROTOCOL_VERSION, "t": "ping"}] * 2],
            "holds a list",
        ),
        ([{"v": const.PROTOCOL_VERSION, "t": "data"}, {"v": const.PROTOCOL_VERSION, "t": "ping"}], "comes last"),
        ([{"v": const.PROTOCOL_VERSION, "t": "ping"}, {"v": 4, "t": "ping"}], "version"),
        (
            [{"v": const.PROTOCOL_VERSION, "t": "ping"}, {"v": const.PROTOCOL_VERSION, "t": "ping", "nonce": "x"}],
            "nonce",
        ),
        ("ping", "not a map"),
    ],
)
def test_a_bad_bundle_is_refused_whole(body: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        protocol.decode_frames([msgpack.packb(body)])


@given(frames())
def test_any_message_or_bundle_only_raises_protocol_error(msg: list[bytes]) -> None:
    """The wire fuzzer's messages (bundles among them), decoded as a socket does."""
    with contextlib.suppress(ProtocolError):
        for m, blobs in protocol.decode_frames(msg):
            assert isinstance(m, protocol.Message) and len(blobs) <= m.blobs


def test_only_a_bundles_last_message_carries_data_frames() -> None:
    frame = protocol.encode_bundle([Ping(1), Ping(2)])
    with pytest.raises(ProtocolError, match="data frames"):
        protocol.decode_frames([frame, b"x"])
    # a lone task's next ticket rides on its Result: the frames are the Result's
    offer, result = Place(node_id="n", addr="h:1", ticket="k"), Result("t", True, node_id="n")
    frame = protocol.encode_bundle([offer, result])
    assert protocol.decode_frames([frame, b"out"]) == [(offer, []), (result, [b"out"])]
    with pytest.raises(ProtocolError, match="at most 1"):
        protocol.decode_frames([frame, b"out", b"more"])


def test_bad_message_log_is_rate_limited_per_peer(caplog: pytest.LogCaptureFixture) -> None:
    bad = protocol.BadMessages(interval=60)
    with caplog.at_level(logging.WARNING, "lamamesh.protocol"):
        assert bad.note("peer-a", ProtocolError("x"), now=0.0)
        assert not bad.note("peer-a", ProtocolError("x"), now=30.0)
        assert bad.note("peer-b", ProtocolError("x"), now=30.0)
        assert bad.note("peer-a", ProtocolError("x"), now=61.0)
    assert bad.total == 4
    assert len([r for r in caplog.records if "dropped" in r.message]) == 3
