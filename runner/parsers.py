"""Parse a big input on every core: chunks of lines go to child processes, rows come back in file order.

Parsing a line (JSON, the stored body, its hash, tiktoken) costs about twice what storing it does, so a
million-line job is parsed by ``cores`` child processes (``python -m runner.parsers``, a module of its own: nothing
of the caller's program is imported again, and no process is forked from one that may run threads) while this
process stores. An input smaller than ``PARALLEL_FROM`` is parsed here: a child takes ~0.5 s to start (imports
and the tokenizer).

Protocol (pickle over the child's stdin and stdout): the ``LineReader``, then chunks ``(line before the first,
[lines])``; each answer is the chunk's parsed rows, or ``(line, problem)`` for its first bad line. End of input
ends the child.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from runner.errors import InputError
from runner.inputline import LineReader
from runner.rows import RequestRow, RowValues

__all__ = ["CHUNK_LINES", "PARALLEL_FROM", "Chunk", "children_for", "parsed"]

CHUNK_LINES = 2000
PARALLEL_FROM = 8 << 20  # bytes left to read from which child processes pay for their start
MOST_CHILDREN = 4
AHEAD = 2  # chunks given to a child before its first answer is read

Chunk = tuple[int, list[bytes]]  # the number of the line before the chunk's first, and its lines
Parsed = Sequence[tuple[RowValues, str]]  # rows in file order, each with the reason it can never be sent ("" if none)


def children_for(size: int, parallel_from: int = PARALLEL_FROM) -> int:
    """How many child processes to parse ``size`` bytes with: none below ``parallel_from`` or on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if size < parallel_from or cores < 2 else min(cores, MOST_CHILDREN)


def parsed(chunks: Iterable[Chunk], reader: LineReader, children: int) -> Iterator[Parsed]:
    """The rows of each chunk in order (blank lines skipped), parsed by ``children`` child processes (0: here).
    Raises InputError for the first bad line."""
    if not children:
        for chunk in chunks:
            yield parse(reader, chunk)
        return
    yield from _in_order([_Child(reader) for _ in range(children)], iter(chunks), reader.path)


def parse(reader: LineReader, chunk: Chunk) -> list[tuple[RequestRow, str]]:
    before, lines = chunk
    return [reader(before + i, raw) for i, raw in enumerate(lines, 1) if raw.strip()]


def _in_order(children: list[_Child], chunks: Iterator[Chunk], path: str) -> Iterator[Parsed]:
    """Chunks go out round-robin from a thread of their own, ``AHEAD`` per child, so a child has its next chunk
    while this process stores; answers are read in the same order. The feeding thread reads the input too."""
    room = threading.Semaphore(AHEAD * len(children))
    stop = threading.Event()
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for i, chunk in enumerate(chunks):
                room.acquire()
                if stop.is_set():
                    return
                children[i % len(children)].send(chunk)
        except BrokenPipeError:
            return  # a child was ended: the reader stopped
        except BaseException as exc:  # the input could not be read: raised where the answers are read
            failure.append(exc)
        for child in children:
            child.finish()

    feeder = threading.Thread(target=feed, name="runner-parse-feeder", daemon=True)
    feeder.start()
    try:
        for i in itertools.count():
            answer = children[i % len(children)].receive()
            if answer is None:
                break
            room.release()
            if isinstance(answer, tuple):
                line, problem = answer
                raise InputError(path, line, problem)
            yield answer
        if failure:
            raise failure[0]
    finally:
        stop.set()
        room.release()  # a feeder waiting for room wakes and stops
        for child in children:
            child.kill()  # a feeder blocked on a full pipe gets BrokenPipeError and stops
        feeder.join()
        for child in children:
            child.finish()


class _Child:
    def __init__(self, reader: LineReader) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner.parsers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": pythonpath},
            start_new_session=True,  # Ctrl-C reaches this process, which ends its children
        )
        self.send(reader)

    def send(self, value: Any) -> None:
        stdin = _stream(self.process.stdin)
        pickle.dump(value, stdin, protocol=pickle.HIGHEST_PROTOCOL)
        stdin.flush()

    def finish(self) -> None:
        """No more chunks: the child answers what it has, then ``receive`` gives None."""
        with contextlib.suppress(BrokenPipeError):  # the child was ended
            _stream(self.process.stdin).close()

    def receive(self) -> Parsed | tuple[int, str] | None:
        try:
            answer: Parsed | tuple[int, str] = pickle.load(_stream(self.process.stdout))
        except EOFError:
            code = self.process.wait()
            if code:
                raise RuntimeError(f"an input parser process ended with exit code {code}") from None
            return None
        return answer

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        _stream(self.process.stdout).close()


def _stream(stream: IO[bytes] | None) -> IO[bytes]:
    assert stream is not None
    return stream


def main() -> None:
    """A child: read the reader, then parse chunks until the end of input."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    reader: LineReader = pickle.load(stdin)
    while True:
        try:
            chunk: Chunk = pickle.load(stdin)
        except EOFError:
            return
        try:
            # rows as plain tuples: a third of the cost to pickle and unpickle
            answer: Parsed | tuple[int, str] = [(row[:], why) for row, why in parse(reader, chunk)]
        except InputError as exc:
            answer = (exc.line, exc.problem)
        pickle.dump(answer, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # the parent ended (killed, or stopped reading at a bad line): nothing to say
        sys.exit(0)
