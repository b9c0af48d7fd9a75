"""Repair an MCAP file cut off mid-write: keep every complete chunk, rewrite the message indexes of the last
one, then append DataEnd, a summary (schemas, channels, chunk indexes, statistics, offsets) and the footer.

Works on the layout rosbags' McapWriter produces (header, then chunk records each followed by their message
index records; schema and channel records live inside chunks). Record layouts follow the MCAP spec
(https://mcap.dev/spec); `repair_mcap` truncates the file in place.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mole_inference.errors import InputError

log = logging.getLogger(__name__)

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE = 0x01, 0x02, 0x03, 0x04, 0x05
OP_CHUNK, OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS = 0x06, 0x07, 0x08, 0x0B
OP_SUMMARY_OFFSET, OP_DATA_END = 0x0E, 0x0F


@dataclass
class ChunkScan:
    """One complete chunk record found on disk and what it holds."""

    start: int  # file offset of the chunk record's opcode
    end: int  # file offset just after the chunk record
    header: bytes  # start/end time, sizes, crc, compression, compressed size (everything before the data)
    compression: str
    compressed_size: int
    uncompressed_size: int
    message_start: int = 2**63 - 1
    message_end: int = 0
    msgs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # channel -> [(log_time, offset)]
    index_offsets: dict[int, int] = field(default_factory=dict)  # channel -> message index record offset
    index_end: int = 0  # file offset after this chunk's message index records


@dataclass
class RepairResult:
    """What `repair_mcap` kept: byte counts, chunks and messages per channel id."""

    kept_bytes: int
    dropped_bytes: int
    chunks: int
    messages: int


def _record(op: int, body: bytes) -> bytes:
    return bytes([op]) + struct.pack("<Q", len(body)) + body


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def _read_string(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return bytes(buf[pos + 4 : pos + 4 + n]).decode(), pos + 4 + n


def _decompress(data: bytes, compression: str, size: int, crc: int) -> bytes:
    from rosbags.rosbag2.storage_mcap import decompress  # '' and 'zstd', with size/crc checks

    return decompress(data, compression, size, crc)


def _scan_chunk(
    bio: BinaryIO, start: int, length: int, schemas: dict[int, bytes], channels: dict[int, bytes]
) -> ChunkScan:
    bio.seek(start + 9)
    body = memoryview(bio.read(length))
    _, _, usize, crc = struct.unpack_from("<QQQI", body, 0)
    compression, pos = _read_string(body, 28)
    (csize,) = struct.unpack_from("<Q", body, pos)
    pos += 8
    chunk = ChunkScan(start, start + 9 + length, bytes(body[:pos]), compression, csize, usize)
    records = memoryview(_decompress(bytes(body[pos : pos + csize]), compression, usize, crc))
    off = 0
    while off < len(records):
        op = records[off]
        (n,) = struct.unpack_from("<Q", records, off + 1)
        rec = records[off + 9 : off + 9 + n]
        if op == OP_SCHEMA:
            schemas[struct.unpack_from("<H", rec, 0)[0]] = bytes(rec)
        elif op == OP_CHANNEL:
            channels[struct.unpack_from("<H", rec, 0)[0]] = bytes(rec)
        elif op == OP_MESSAGE:
            cid, _, log_time = struct.unpack_from("<HIQ", rec, 0)
            chunk.msgs.setdefault(cid, []).append((log_time, off))
            chunk.message_start = min(chunk.message_start, log_time)
            chunk.message_end = max(chunk.message_end, log_time)
        off += 9 + n
    return chunk


def scan_mcap(bio: BinaryIO, size: int) -> tuple[list[ChunkScan], dict[int, bytes], dict[int, bytes]]:
    """Find the complete chunks (with their message indexes) and the schema/channel records in a file."""
    if bio.read(8) != MAGIC:
        raise InputError("not an MCAP file (bad magic); nothing to recover")
    head = bio.read(9)
    if len(head) < 9 or head[0] != OP_HEADER:
        raise InputError("MCAP file has no complete header record; nothing was flushed")
    pos = 17 + struct.unpack_from("<Q", head, 1)[0]
    chunks: list[ChunkScan] = []
    schemas: dict[int, bytes] = {}
    channels: dict[int, bytes] = {}
    while True:
        bio.seek(pos)
        head = bio.read(11)
        if len(head) < 9:
            break
        op, length = head[0], struct.unpack_from("<Q", head, 1)[0]
        if pos + 9 + length > size:
            break  # cut off mid-record
        if op == OP_CHUNK:
            chunks.append(_scan_chunk(bio, pos, length, schemas, channels))
            chunks[-1].index_end = chunks[-1].end
        elif op == OP_MESSAGE_INDEX and chunks and len(head) == 11:
            chunks[-1].index_offsets[struct.unpack_from("<H", head, 9)[0]] = pos
            chunks[-1].index_end = pos + 9 + length
        else:
            break  # DataEnd/summary (file was closed) or a layout rosbags does not write: stop here
        pos += 9 + length
    return chunks, schemas, channels


def _message_indexes(chunk: ChunkScan, at: int) -> bytes:
    out = io.BytesIO()
    chunk.index_offsets = {}
    for cid, entries in chunk.msgs.items():
        chunk.index_offsets[cid] = at + out.tell()
        body = b"".join(struct.pack("<QQ", t, off) for t, off in entries)
        out.write(_record(OP_MESSAGE_INDEX, struct.pack("<HI", cid, len(body)) + body))
    chunk.index_end = at + out.tell()
    return out.getvalue()


def _summary(chunks: list[ChunkScan], schemas: dict[int, bytes], channels: dict[int, bytes], start: int) -> bytes:
    out = io.BytesIO()
    groups: list[tuple[int, int, int]] = []

    def group(op: int, records: list[bytes]) -> None:
        if records:
            begin = out.tell()
            out.write(b"".join(records))
            groups.append((op, start + begin, out.tell() - begin))

    group(OP_SCHEMA, [_record(OP_SCHEMA, schemas[k]) for k in sorted(schemas)])
    group(OP_CHANNEL, [_record(OP_CHANNEL, channels[k]) for k in sorted(channels)])
    indexes = []
    for c in chunks:
        offsets = b"".join(struct.pack("<HQ", cid, off) for cid, off in sorted(c.index_offsets.items()))
        indexes.append(
            _record(
                OP_CHUNK_INDEX,
                struct.pack("<QQQQ", c.message_start if c.msgs else 0, c.message_end, c.start, c.end - c.start)
                + struct.pack("<I", len(offsets))
                + offsets
                + struct.pack("<Q", c.index_end - c.end)
                + _string(c.compression)
                + struct.pack("<QQ", c.compressed_size, c.uncompressed_size),
            )
        )
    group(OP_CHUNK_INDEX, indexes)
    counts: dict[int, int] = {}
    for c in chunks:
        for cid, entries in c.msgs.items():
            counts[cid] = counts.get(cid, 0) + len(entries)
    with_msgs = [c for c in chunks if c.msgs]
    first = min((c.message_start for c in with_msgs), default=0)
    last = max((c.message_end for c in with_msgs), default=0)
    per_channel = b"".join(struct.pack("<HQ", cid, n) for cid, n in sorted(counts.items()))
    stats = (
        struct.pack("<QHIIIIQQ", sum(counts.values()), len(schemas), len(channels), 0, 0, len(chunks), first, last)
        + struct.pack("<I", len(per_channel))
        + per_channel
    )
    group(OP_STATISTICS, [_record(OP_STATISTICS, stats)])
    offsets_start = start + out.tell()
    for op, begin, length in groups:
        out.write(_record(OP_SUMMARY_OFFSET, struct.pack("<BQQ", op, begin, length)))
    out.write(_record(OP_FOOTER, struct.pack("<QQI", start, offsets_start, 0)) + MAGIC)
    return out.getvalue()


def repair_mcap(path: str | Path) -> RepairResult:
    """Truncate `path` after its last complete chunk and append indexes, summary and footer, in place.

    Raises InputError when the file holds no complete chunk (nothing was flushed before the crash).
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("r+b") as bio:
        chunks, schemas, channels = scan_mcap(bio, size)
        if not chunks:
            raise InputError(f"{path} holds no complete MCAP chunk ({size} bytes); nothing to recover")
        last = chunks[-1]
        bio.seek(last.end)
        bio.truncate()
        bio.write(_message_indexes(last, last.end))
        bio.write(_record(OP_DATA_END, struct.pack("<I", 0)))
        bio.write(_summary(chunks, schemas, channels, bio.tell()))
    messages = sum(len(v) for c in chunks for v in c.msgs.values())
    result = RepairResult(last.end, size - last.end, len(chunks), messages)
    log.info(
        "repaired %s: kept %d chunks / %d messages, dropped %d trailing bytes",
        path,
        result.chunks,
        result.messages,
        result.dropped_bytes,
    )
    return result
