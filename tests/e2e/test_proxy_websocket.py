"""websocket-client, used as an application would use it, through Portico to fakeworker's `/ws`."""

import json

import websocket

ENDPOINT = "/project/p1/endpoint/e1"
# A public endpoint ignores the token; once tokens land it is what a client sends.
AUTH = {"Authorization": "Bearer anything"}


def connect(base_url, route, **options):
    """Opens a WebSocket to `route` of endpoint e1 on the Portico at `base_url` (http://)."""
    url = "ws://" + base_url.removeprefix("http://") + ENDPOINT + route
    return websocket.create_connection(url, header=AUTH, timeout=10, **options)


def transcribe(ws, chunk):
    """Sends one chunk and reads the partial results and the final one it gets back."""
    if isinstance(chunk, bytes):
        ws.send_binary(chunk)
    else:
        ws.send(chunk)
    replies = []
    while not replies or replies[-1]["type"] != "final":
        replies.append(json.loads(ws.recv()))
    return replies[:-1], replies[-1]


def test_streaming_transcription(fakeworker, portico):
    """Audio chunks (binary) and text chunks streamed through Portico each get three growing
    partial results and then the final one, in order, chunk after chunk."""
    ws = connect(portico(fakeworker()), "/ws?mode=stream&partials=3")
    try:
        # 100, 200 and 50 ms of 16 kHz 16-bit mono audio.
        for size in (3200, 6400, 1600):
            audio = bytes(i % 251 for i in range(size))
            partials, final = transcribe(ws, audio)
            assert final == {"type": "final", "text": f"<{size} bytes>"}
            assert [p["type"] for p in partials] == ["partial"] * 3
            assert [p["index"] for p in partials] == [0, 1, 2]
            texts = [p["text"] for p in partials]
            assert all(final["text"].startswith(t) for t in texts), texts
            assert [len(t) for t in texts] == sorted(len(t) for t in texts), texts

        for chunk in ("the quick brown fox", "jumps over the lazy dog"):
            partials, final = transcribe(ws, chunk)
            assert final == {"type": "final", "text": chunk}
            assert len(partials) == 3
            assert all(chunk.startswith(p["text"]) for p in partials), partials
    finally:
        ws.close()


def test_echo_of_text_and_binary(fakeworker, portico):
    """Text and binary messages come back through Portico unchanged and with their type,
    and a ping is answered."""
    ws = connect(portico(fakeworker()), "/ws")
    try:
        for text in ("hello", "é ü ✓ 音声", "x" * 65536):
            ws.send(text)
            opcode, echoed = ws.recv_data()
            assert opcode == websocket.ABNF.OPCODE_TEXT
            assert echoed.decode("utf-8") == text
        for data in (b"\x00", bytes(range(256)) * 256):
            ws.send_binary(data)
            opcode, echoed = ws.recv_data()
            assert opcode == websocket.ABNF.OPCODE_BINARY
            assert echoed == data
        ws.ping("still there?")
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PONG
        assert frame.data == b"still there?"
    finally:
        ws.close()


def test_subprotocol_is_negotiated_with_the_worker(fakeworker, portico):
    """The subprotocol a client asks for is the one the worker picked (the first offered)."""
    ws = connect(portico(fakeworker()), "/ws", subprotocols=["chat", "superchat"])
    try:
        assert ws.getsubprotocol() == "chat"
        ws.send("hi")
        assert ws.recv() == "hi"
    finally:
        ws.close()
