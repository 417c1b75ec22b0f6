"""An incremental decoder for ``text/event-stream`` (the WHATWG server-sent events format).

Bytes go in as the network delivers them; whole events come out. It copes with what real
servers and proxies do: events and lines split anywhere (even inside a UTF-8 sequence or
between ``\\r`` and ``\\n``), ``\\n``, ``\\r\\n`` or ``\\r`` line ends, several ``data:``
lines per event (joined with ``\\n``), ``:`` comment lines used as keep-alives, a byte
order mark, and a stream that ends without the final blank line (``close()`` dispatches
what is pending).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by ``chunk`` (often none, sometimes several)."""
        return self._lines(self._utf8.decode(chunk), final=False)

    def close(self) -> list[SSEEvent]:
        """End of stream: the rest of the buffer, and an event left without its blank line."""
        events = self._lines(self._utf8.decode(b"", final=True), final=True)
        if self._data:
            events.append(self._dispatch())
        return events

    def _lines(self, text: str, *, final: bool) -> list[SSEEvent]:
        text = self._buffer + text
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(text):
            if match.group() == "\r" and match.end() == len(text) and not final:
                break  # a "\n" may follow in the next chunk
            event = self._line(text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = text[start:]
        if final and self._buffer:
            event = self._line(self._buffer)
            self._buffer = ""
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if self._data:
                return self._dispatch()
            self._event = ""
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(data="\n".join(self._data), event=self._event or "message", id=self._id)
        self._data = []
        self._event = ""
        return event
