"""Input files: globs, gzip/zstd decompression, numbered lines as raw bytes.

Lines stay bytes here: decoding (and the "invalid UTF-8" error with its line number) happens in the
worker processes, so the reading process only moves bytes.
"""

from __future__ import annotations

import glob
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import zstandard

from tower_megatron.resources import resolve


class InputError(ValueError):
    """Bad input, located: ``file:line: field: message``."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str, reason: str) -> None:
        self.path, self.line, self.field, self.message, self.reason = path, line, field, message, reason
        where = f"{path}:{line}" if line is not None else path
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


def expand_files(patterns: list[str], source: str) -> list[Path]:
    """Sorted, de-duplicated files matching ``patterns`` (``resource:`` paths allowed)."""
    if not patterns:
        raise InputError(f"source {source!r}", None, "files", "no input files configured", "no_files")
    files: list[Path] = []
    for pattern in patterns:
        resolved = resolve(pattern)
        matches = sorted(glob.glob(resolved, recursive=True)) if glob.has_magic(resolved) else [resolved]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise InputError(resolved, None, None, f"no such file (source {source!r})", "missing_file")
        files += [Path(m) for m in matches]
    return list(dict.fromkeys(files))


def detect_format(path: Path, configured: str) -> str:
    if configured not in FORMATS:  # checked with the config too; a direct caller gets it here
        raise InputError(
            str(path), None, "format", f"unknown format {configured!r}; known: {', '.join(FORMATS)}", "format"
        )
    if configured != "auto":
        return configured
    suffixes = [s for s in path.suffixes if s not in (".gz", ".zst", ".zstd")]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if ext in (".tsv", ".tab"):
        return "tsv"
    raise InputError(
        str(path), None, None, "cannot tell the format from the extension; set format: jsonl|tsv", "format"
    )


UTF8_BOM = b"\xef\xbb\xbf"
FORMATS = ("auto", "jsonl", "tsv")


class _ZstdFrames(io.RawIOBase):
    """Decompressed bytes of consecutive zstd frames; an error when the input ends inside one.

    python-zstandard's ``stream_reader`` reads a stream cut inside a later frame as a shorter
    file, silently: a truncated download would lose its tail without a word.
    """

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False  # bytes of an unfinished frame were fed
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _feed(self, chunk: bytes) -> bytes:
        parts = []
        while chunk:
            if self._obj.eof:
                self._obj = self._dctx.decompressobj()
            parts.append(self._obj.decompress(chunk))
            chunk = self._obj.unused_data if self._obj.eof else b""
        self._in_frame = not self._obj.eof
        return b"".join(parts)

    def readinto(self, buffer) -> int:
        while not len(self._out):
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise zstandard.ZstdError("the input ends inside a zstd frame (truncated file)")
                return 0
            self._out = memoryview(self._feed(chunk))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


class LineReader:
    """Iterates ``(line_number, raw_line_without_newline)``; ``position()`` is the bytes read from
    disk so far (compressed bytes for compressed files) for the progress bar."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw = open(path, "rb")  # noqa: SIM115 (closed in close())
        magic = self._raw.peek(4)[:4] if hasattr(self._raw, "peek") else b""
        if path.suffix == ".gz" or magic[:2] == b"\x1f\x8b":
            self._stream: io.BufferedIOBase = gzip.GzipFile(fileobj=self._raw)
        elif path.suffix in (".zst", ".zstd") or magic == b"\x28\xb5\x2f\xfd":
            self._stream = io.BufferedReader(_ZstdFrames(self._raw), buffer_size=1 << 20)
        else:
            self._stream = self._raw
        self.line = 0

    def position(self) -> int:
        return self._raw.tell()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        try:
            for raw in self._stream:
                self.line += 1
                if self.line == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM) :]  # editors' byte-order mark: not part of the first record
                yield self.line, raw.rstrip(b"\r\n")
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            # Truncated or corrupt compressed data: name the last good line.
            raise InputError(
                str(self.path), self.line + 1, None, f"cannot decompress: {exc}", "corrupt_file"
            ) from None

    def close(self) -> None:
        self._stream.close()
        self._raw.close()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
