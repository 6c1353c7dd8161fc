"""Neural-codec bit-strings: equivalence with CompressAI, both forms, rejection of bad input."""

from __future__ import annotations

import copy
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vision import CodecError, make_codec
from vision._codec import (
    FORMAT_VERSION,
    CodecLimits,
    StreamHeader,
    _padding_words,
    _tables,
    decode_batch,
    decode_batch_latents,
    decode_single,
    decode_single_latents,
    encode_batch,
    encode_single,
    quantized_latents,
)

_MASK64 = (1 << 64) - 1
_L = 1 << 31


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread (and do not fight other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def codec() -> Any:
    torch.manual_seed(0)
    c = make_codec(N=16, M=12).eval()
    c.update()
    return c


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(6, 3, 32, 32)


def test_make_codec_is_the_paper_size() -> None:
    c = make_codec()
    params = sum(p.numel() for p in c.parameters())
    assert 11e6 < params * 4 < 13e6  # about 12 MB of float32 weights
    with pytest.raises(ValueError):
        make_codec(N=0)


def test_update_is_required(images: torch.Tensor) -> None:
    c = make_codec(N=8, M=8)
    with pytest.raises(CodecError, match="update"):
        encode_single(c, images)
    with pytest.raises(CodecError, match="update"):
        decode_single(c, [StreamHeader(batch=False, height=2, width=2).to_bytes() + b"\x01"])


def test_single_strings_are_compressai_strings(codec: Any, images: torch.Tensor) -> None:
    strings = encode_single(codec, images)
    with torch.inference_mode():
        reference = codec.compress(images)
    ref_strings = reference["strings"][0]
    assert tuple(reference["shape"]) == (2, 2)
    header = StreamHeader(batch=False, height=2, width=2).to_bytes()
    assert header == b"\x42"
    for ours, theirs in zip(strings, ref_strings, strict=True):
        assert ours[:1] == header
        assert ours[1:] == theirs.rstrip(b"\x00")
    y_hat = decode_single_latents(codec, strings)
    y_ref = codec.entropy_bottleneck.decompress(ref_strings, (2, 2))
    assert torch.equal(y_hat, y_ref)
    x_hat = decode_single(codec, strings)
    with torch.inference_mode():
        x_ref = codec.decompress([ref_strings], (2, 2))["x_hat"]
    assert torch.allclose(x_hat, x_ref)
    assert x_hat.shape == images.shape


def test_latents_match_quantisation(codec: Any, images: torch.Tensor) -> None:
    symbols = quantized_latents(codec, images)
    medians = codec.entropy_bottleneck.quantiles[:, 0, 1].detach().reshape(1, -1, 1, 1)
    assert torch.equal(decode_batch_latents(codec, encode_batch(codec, images)), symbols + medians)


def test_batch_and_single_agree(codec: Any, images: torch.Tensor) -> None:
    strings = encode_single(codec, images)
    batch = encode_batch(codec, images)
    assert torch.equal(decode_single_latents(codec, strings), decode_batch_latents(codec, batch))
    assert torch.equal(decode_single(codec, strings), decode_batch(codec, batch))
    header = StreamHeader.from_bytes(batch)
    assert (header.batch, header.count, header.height, header.width) == (True, 6, 2, 2)
    # one stream: cheaper than the strings together (one flush instead of six)
    assert len(batch) < sum(len(s) for s in strings)


def test_escape_coded_symbols_round_trip(codec: Any) -> None:
    """Latents far outside the CDF support take CompressAI's bypass path."""
    codec = copy.deepcopy(codec)
    with torch.no_grad():
        codec.g_a[-1].weight.mul_(3000.0)
    torch.manual_seed(2)
    x = torch.rand(3, 3, 48, 32)
    symbols = quantized_latents(codec, x)
    offsets = codec.entropy_bottleneck._offset.reshape(1, -1, 1, 1)
    lengths = codec.entropy_bottleneck._cdf_length.reshape(1, -1, 1, 1)
    assert bool(((symbols < offsets) | (symbols >= offsets + lengths - 2)).any())
    strings = encode_single(codec, x)
    assert torch.equal(
        decode_single_latents(codec, strings), decode_batch_latents(codec, encode_batch(codec, x))
    )
    medians = codec.entropy_bottleneck.quantiles[:, 0, 1].detach().reshape(1, -1, 1, 1)
    assert torch.equal(decode_single_latents(codec, strings), symbols + medians)
    assert decode_single(codec, strings).shape == (3, 3, 48, 32)


def test_header_sizes() -> None:
    assert FORMAT_VERSION == 2
    # CIFAR-10 (latent 2 x 2): 1 byte single, 2 bytes per batch of <= 127, 3 of <= 16383
    assert StreamHeader(batch=False, height=2, width=2).to_bytes() == b"\x42"
    assert StreamHeader(batch=True, height=2, width=2, count=127).to_bytes() == b"\x52\x7f"
    assert StreamHeader(batch=True, height=2, width=2, count=256).to_bytes() == b"\x52\x80\x02"
    big = StreamHeader(batch=False, height=17, width=300)
    assert big.to_bytes() == b"\x40\x11\xac\x02"
    assert StreamHeader.parse(big.to_bytes(), CodecLimits(max_latent_side=300)) == (big, 4)


@pytest.mark.parametrize("side", range(1, 16))
def test_square_grids_up_to_15_use_the_nibble(side: int) -> None:
    single = StreamHeader(batch=False, height=side, width=side)
    batch = StreamHeader(batch=True, height=side, width=side, count=3)
    assert single.square_nibble == side
    assert single.to_bytes() == bytes([0x40 | side])
    assert batch.to_bytes() == bytes([0x50 | side, 3])
    assert StreamHeader.parse(single.to_bytes() + b"\x01") == (single, 1)
    assert StreamHeader.parse(batch.to_bytes() + b"\x01") == (batch, 2)


@pytest.mark.parametrize(
    ("height", "width"), [(16, 16), (17, 17), (2, 3), (3, 2), (1, 15), (15, 16), (1, 200)]
)
def test_other_grids_use_varints(height: int, width: int) -> None:
    limits = CodecLimits(max_latent_side=200)
    single = StreamHeader(batch=False, height=height, width=width)
    assert single.square_nibble == 0
    shape = bytearray()
    for side in (height, width):
        shape += bytes([side]) if side < 128 else bytes([side & 0x7F | 0x80, side >> 7])
    assert single.to_bytes() == b"\x40" + shape
    assert StreamHeader.parse(single.to_bytes(), limits) == (single, 1 + len(shape))
    batch = StreamHeader(batch=True, height=height, width=width, count=256)
    assert batch.to_bytes() == b"\x50" + shape + b"\x80\x02"
    assert StreamHeader.parse(batch.to_bytes(), limits) == (batch, 3 + len(shape))


@pytest.mark.parametrize("side", [1, 2, 15])
def test_varint_square_grid_that_fits_the_nibble_is_non_canonical(
    codec: Any, images: torch.Tensor, side: int
) -> None:
    for first, tail in ((0x40, b""), (0x50, b"\x01")):
        data = bytes([first, side, side]) + tail + b"\xff" * 8
        with pytest.raises(CodecError, match="non-canonical"):
            StreamHeader.from_bytes(data)
    # the codec's own payload behind the non-canonical header is refused as well
    good = encode_single(codec, images[:1])[0]
    with pytest.raises(CodecError, match="non-canonical"):
        decode_single(codec, [bytes([0x40, 2, 2]) + good[1:]])
    stream = encode_batch(codec, images[:2])
    with pytest.raises(CodecError, match="non-canonical"):
        decode_batch(codec, bytes([0x50, 2, 2]) + stream[1:])


def test_version_1_refused(codec: Any, images: torch.Tensor) -> None:
    good = encode_single(codec, images[:1])[0]
    stream = encode_batch(codec, images[:2])
    # the same payloads behind the version-1 headers (flags byte, compact shape byte)
    v1_single = b"\x20\x11" + good[1:]
    v1_batch = b"\x30\x11\x02" + stream[2:]
    with pytest.raises(CodecError, match="unsupported bit-string format version 1"):
        decode_single(codec, [v1_single])
    with pytest.raises(CodecError, match="unsupported bit-string format version 1"):
        decode_batch(codec, v1_batch)
    with pytest.raises(CodecError, match="unsupported bit-string format version 1"):
        StreamHeader(batch=False, height=2, width=2, version=1)
    for version in (0, 3, 7):
        with pytest.raises(CodecError, match=f"format version {version}"):
            decode_single(codec, [bytes([version << 5 | 0x02]) + good[1:]])


@pytest.mark.parametrize("batch_form", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize(
    ("size", "nibble"),
    [((32, 32), 2), ((240, 240), 15), ((48, 32), 0), ((256, 256), 0)],
    ids=["nibble-2", "nibble-15", "varint-3x2", "varint-16x16"],
)
def test_forms_and_shapes_round_trip(
    codec: Any, batch_form: bool, size: tuple[int, int], nibble: int
) -> None:
    torch.manual_seed(4)
    x = torch.rand(2, 3, *size)
    height, width = size[0] // 16, size[1] // 16
    symbols = quantized_latents(codec, x)
    medians = codec.entropy_bottleneck.quantiles[:, 0, 1].detach().reshape(1, -1, 1, 1)
    with torch.inference_mode():
        expected = codec.g_s(symbols + medians).clamp(0.0, 1.0)
    if batch_form:
        stream = encode_batch(codec, x)
        header, pos = StreamHeader.parse(stream)
        assert header == StreamHeader(batch=True, height=height, width=width, count=2)
        decoded = decode_batch(codec, stream)
    else:
        strings = encode_single(codec, x)
        with torch.inference_mode():
            reference = codec.compress(x)
        for string, theirs in zip(strings, reference["strings"][0], strict=True):
            header, pos = StreamHeader.parse(string)
            assert header == StreamHeader(batch=False, height=height, width=width)
            assert string[pos:] == theirs.rstrip(b"\x00")
        decoded = decode_single(codec, strings)
        with torch.inference_mode():
            assert torch.allclose(
                decoded, codec.decompress(reference["strings"], (height, width))["x_hat"]
            )
    assert header.square_nibble == nibble
    assert pos == (1 if nibble else 3) + (1 if batch_form else 0)
    assert decoded.shape == x.shape
    assert torch.equal(decoded, expected)


def test_sizes_reported(codec: Any, images: torch.Tensor) -> None:
    strings = encode_single(codec, images)
    batch = encode_batch(codec, images)
    single_mean = sum(len(s) for s in strings) / len(strings)
    print(
        f"untrained codec: {single_mean:.1f} B/image single, {len(batch) / 6:.1f} B/image batched"
    )
    assert single_mean > len(batch) / 6


def test_image_checks(codec: Any) -> None:
    for bad in (torch.rand(1, 3, 30, 32), torch.rand(3, 32, 32), torch.rand(1, 1, 32, 32)):
        with pytest.raises(CodecError):
            encode_single(codec, bad)
    with pytest.raises(CodecError):
        encode_batch(codec, torch.rand(0, 3, 32, 32))
    with pytest.raises(CodecError, match="non-finite"):
        encode_single(codec, torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(CodecError):
        encode_single(codec, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_form_mismatch(codec: Any, images: torch.Tensor) -> None:
    strings = encode_single(codec, images[:2])
    batch = encode_batch(codec, images[:2])
    with pytest.raises(CodecError, match="batch"):
        decode_batch(codec, strings[0])
    with pytest.raises(CodecError, match="single"):
        decode_single(codec, [batch])
    with pytest.raises(CodecError):
        decode_single(codec, strings[0])  # type: ignore[arg-type]  # a bare bytes object, not a sequence of strings
    with pytest.raises(CodecError):
        decode_single(codec, [])


def test_mixed_shapes_rejected(codec: Any) -> None:
    a = encode_single(codec, torch.rand(1, 3, 32, 32))
    b = encode_single(codec, torch.rand(1, 3, 48, 32))
    with pytest.raises(CodecError, match="shapes"):
        decode_single(codec, a + b)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([0x02, 0xFF]),  # version 0
        bytes([0x20, 0x11, 0xFF]),  # version 1 (its flags byte and compact shape byte)
        bytes([0x62, 0xFF]),  # version 3
        bytes([0xE2, 0xFF]),  # version 7
        bytes([0x40, 0x02, 0x02, 0xFF]),  # varint shape where the nibble fits
        bytes([0x40, 0x82, 0x00, 0x02, 0xFF]),  # non-minimal varint
        bytes([0x40, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),  # varint too long
        bytes([0x40, 0x80]),  # truncated varint
        bytes([0x40]),  # truncated shape
        bytes([0x40, 0x10]),  # truncated shape (no width)
        bytes([0x40, 0x00, 0x02, 0xFF]),  # zero height
        bytes([0x42]),  # no payload
        bytes([0x52, 0x01, 0xFF]),  # batch form
        bytes([0x40, 0xFF, 0xFF, 0x03, 0x02, 0xFF]),  # absurd height
    ],
)
def test_bad_headers(codec: Any, data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_single(codec, [data])


def test_absurd_counts_refused_before_decoding(codec: Any) -> None:
    huge = StreamHeader(batch=True, height=2, width=2, count=4096).to_bytes() + b"\x01" * 8
    with pytest.raises(CodecError, match="symbols"):
        decode_batch(codec, huge, limits=CodecLimits(max_symbols=1000))
    over = bytes([0x52]) + b"\xff\xff\x03" + b"\x01" * 8  # count 65535
    with pytest.raises(CodecError, match="count"):
        decode_batch(codec, over)
    with pytest.raises(CodecError, match="at least one"):
        decode_batch(codec, bytes([0x52, 0x00]) + b"\x01" * 8)  # count 0 (non-canonical)


def test_payload_checks(codec: Any, images: torch.Tensor) -> None:
    good = encode_single(codec, images[:1])[0]
    with pytest.raises(CodecError, match="trailing zero"):
        decode_single(codec, [good + b"\x00"])
    with pytest.raises(CodecError, match="initial state"):
        decode_single(codec, [good[:1] + b"\x01"])
    with pytest.raises(CodecError, match="limit"):
        decode_single(codec, [good], limits=CodecLimits(max_payload_bytes=4))


def test_every_truncation_and_extension_rejected(codec: Any, images: torch.Tensor) -> None:
    good = encode_single(codec, images[:1])[0]
    batch = encode_batch(codec, images[:3])
    for cut in range(len(good)):
        with pytest.raises(CodecError):
            decode_single(codec, [good[:cut]])
    for cut in range(0, len(batch), 7):
        with pytest.raises(CodecError):
            decode_batch(codec, batch[:cut])
    for tail in (b"\x01", b"\xff\xff\xff\xff", b"\x00\x01"):
        with pytest.raises(CodecError):
            decode_single(codec, [good + tail])
        with pytest.raises(CodecError):
            decode_batch(codec, batch + tail)


def test_bit_flips_rejected(codec: Any, images: torch.Tensor) -> None:
    good = encode_single(codec, images[:1])[0]
    for i in range(1, len(good)):  # every payload byte (the header is one byte)
        for bit in (0, 3, 7):
            flipped = bytearray(good)
            flipped[i] ^= 1 << bit
            with pytest.raises(CodecError):
                decode_single(codec, [bytes(flipped)])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200))
def test_garbage_rejected(codec: Any, data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_single(codec, [data])
    with pytest.raises(CodecError):
        decode_batch(codec, data)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.binary(min_size=1, max_size=300),
    count=st.integers(min_value=1, max_value=40),
)
def test_garbage_payload_behind_valid_header_rejected(
    codec: Any, payload: bytes, count: int
) -> None:
    single = StreamHeader(batch=False, height=2, width=2).to_bytes() + payload
    batch = StreamHeader(batch=True, height=2, width=2, count=count).to_bytes() + payload
    with pytest.raises(CodecError):
        decode_single(codec, [single])
    with pytest.raises(CodecError):
        decode_batch(codec, batch)


# --- the padding bound, against a model of CompressAI's rANS decoder ----------------


def _model_decode(
    data: bytes, indexes: list[int], cdfs: list[list[int]], sizes: list[int], offsets: list[int]
) -> tuple[list[int], int]:
    """A Python transcription of ``RansDecoder.decode_with_indexes`` (rans64, 16-bit
    precision, 4-bit bypass) reading zeros past the end; returns (symbols, words read)."""
    words = struct.unpack(f"<{len(data) // 4}I", data[: len(data) // 4 * 4])
    ptr = 0

    def word() -> int:
        nonlocal ptr
        value = words[ptr] if ptr < len(words) else 0
        ptr += 1
        return value

    x = word() | (word() << 32)
    out: list[int] = []

    def get_bits() -> int:
        nonlocal x
        val = x & 15
        x >>= 4
        if x < _L:
            x = ((x << 32) | word()) & _MASK64
        return val

    for idx in indexes:
        cdf = cdfs[idx]
        max_value = sizes[idx] - 2
        cum = x & 0xFFFF
        s = next(j for j in range(sizes[idx]) if cdf[j] > cum) - 1
        x = ((cdf[s + 1] - cdf[s]) * (x >> 16) + (x & 0xFFFF) - cdf[s]) & _MASK64
        if x < _L:
            x = ((x << 32) | word()) & _MASK64
        value = s
        if value == max_value:
            val = get_bits()
            n_bypass = val
            while val == 15:
                val = get_bits()
                n_bypass += val
            raw = 0  # int32 in C++; a shift by 32 or more wraps modulo 32 on x86-64
            for j in range(n_bypass):
                raw |= (get_bits() << ((4 * j) % 32)) & 0xFFFFFFFF
            signed = raw - (1 << 32) if raw >> 31 else raw
            value = -(signed >> 1) - 1 if signed & 1 else (signed >> 1) + max_value
        out.append(value + offsets[idx])
    return out, ptr


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.one_of(
        st.binary(min_size=8, max_size=64),
        st.integers(min_value=2, max_value=40).map(lambda n: b"\xff" * n),
        st.binary(min_size=1, max_size=8).map(
            lambda b: b"\xff\xff\xff\xff\xff\xff\xff\xff" + b * 5
        ),
    ),
    count=st.integers(min_value=1, max_value=3),
)
def test_padding_bound_holds_for_garbage(codec: Any, payload: bytes, count: int) -> None:
    from compressai import ans

    tables = _tables(codec)
    indexes = [c for c in range(tables.channels) for _ in range(4)] * count
    payload = payload.rstrip(b"\x00") or b"\x01"
    n_words = -(-len(payload) // 4)
    if int.from_bytes((payload + bytes(8))[:8], "little") < _L:
        return  # refused before the native decoder runs
    symbols, words_read = _model_decode(
        payload + bytes(4 * n_words - len(payload)),
        indexes,
        tables.cdfs,
        tables.cdf_sizes,
        tables.offsets,
    )
    assert words_read <= 2 + 25 * len(indexes) + 21 * n_words
    assert words_read <= n_words + _padding_words(len(indexes), n_words)
    # the model is faithful: the native decoder (on the padded buffer) agrees
    buffer = payload + bytes(4 * n_words - len(payload) + 4 * _padding_words(len(indexes), n_words))
    native = ans.RansDecoder().decode_with_indexes(
        buffer, indexes, tables.cdfs, tables.cdf_sizes, tables.offsets
    )
    assert [v & 0xFFFFFFFF for v in native] == [v & 0xFFFFFFFF for v in symbols]


def test_table_cache_follows_update(images: torch.Tensor) -> None:
    torch.manual_seed(3)
    c = make_codec(N=8, M=8)
    c.update()
    before = encode_single(c, images[:2])
    assert encode_single(c, images[:2]) == before  # cached tables
    with torch.no_grad():
        c.entropy_bottleneck.quantiles[:, 0, 0] -= 5.0
        c.entropy_bottleneck.quantiles[:, 0, 2] += 5.0
    c.update(force=True)
    after = encode_single(c, images[:2])
    with torch.inference_mode():
        reference = c.compress(images[:2])["strings"][0]
    assert [s[1:] for s in after] == [r.rstrip(b"\x00") for r in reference]
    assert after != before
    # an in-place change of the tables is noticed as well (symbols decode one lower)
    latents = decode_single_latents(c, after)
    with torch.no_grad():
        c.entropy_bottleneck._offset.sub_(1)
    assert torch.equal(decode_single_latents(c, after), latents - 1)
