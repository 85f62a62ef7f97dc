// Server-sent events read from a fetch() Response. EventSource cannot send an
// Authorization header (admin token, project token) nor POST a body, so the console reads
// the stream itself.

/**
 * Calls `onData(text)` with the data of each event (its `data:` lines joined by "\n"), in
 * order, and resolves when the stream ends. Comments (`: keep-alive`, `: waking`) and
 * other fields are skipped. Abort through the fetch's signal.
 */
export async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data = [];
  const line = (text) => {
    if (text === '') {
      if (data.length) onData(data.join('\n'));
      data = [];
    } else if (text.startsWith('data:')) {
      data.push(text.slice(text[5] === ' ' ? 6 : 5));
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    // Lines end with \n, \r\n or \r; keep a trailing partial line for the next chunk.
    const parts = buffer.split(/\r\n|\n|\r(?!$)/);
    buffer = parts.pop();
    for (const part of parts) line(part);
  }
  buffer += decoder.decode();
  if (buffer) line(buffer.replace(/\r$/, ''));
  line('');
}
