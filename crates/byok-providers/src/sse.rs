//! An incremental Server-Sent Events parser: feed bytes as they arrive, get whole events.

/// One event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Largest event (pending line plus collected data) the parser holds; beyond it the stream is
/// treated as broken ([`SseParser::overflowed`]).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Splits a byte stream into events (`\n`, `\r\n` or `\r` line ends; comments ignored).
/// Each byte is scanned once, however the stream is chunked.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned without finding a line end.
    scanned: usize,
    event: Option<String>,
    data: Vec<String>,
    data_bytes: usize,
    overflow: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.overflow {
            return out;
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                // A lone `\r` at the end may be the first half of `\r\n`: wait for more.
                if b == b'\r' && i + 1 == self.buf.len() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                if b == b'\r' && self.buf.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                i += 1;
                start = i;
                self.line(&line, &mut out);
                continue;
            }
            i += 1;
        }
        self.buf.drain(..start);
        self.scanned = i - start;
        if self.buf.len() + self.data_bytes > MAX_EVENT_BYTES {
            self.overflow = true;
            self.buf.clear();
            self.data.clear();
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if !self.data.is_empty() || self.event.is_some() {
                self.data_bytes = 0;
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                self.data_bytes += value.len();
                self.data.push(value.to_string());
            }
            _ => {}
        }
    }

    /// Whether bytes of an unfinished event are pending (a stream that ends here was cut).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || !self.data.is_empty() || self.event.is_some()
    }

    /// An event grew past [`MAX_EVENT_BYTES`]; the parser ignores the rest of the stream.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// The end of the last complete event in `bytes` (just after its blank line), if any.
pub fn last_event_end(bytes: &[u8]) -> Option<usize> {
    let lf = bytes.windows(2).rposition(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = bytes
        .windows(4)
        .rposition(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    lf.max(crlf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks_and_line_endings() {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: message_start\r\ndata: {\"a\"").is_empty());
        let ev = p.feed(b":1}\r\n\r\n: comment\n\ndata: [DONE]\n\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].event.as_deref(), Some("message_start"));
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "[DONE]");
        assert!(!p.has_partial());
        p.feed(b"data: x\n");
        assert!(p.has_partial());
        let ev = p.feed(b"data: y\n\n");
        assert_eq!(ev[0].data, "x\ny");
        // `\r\n` split across chunks is one line end.
        assert!(p.feed(b"data: z\r").is_empty());
        let ev = p.feed(b"\n\r\n");
        assert_eq!(ev[0].data, "z");
    }

    #[test]
    fn byte_by_byte_feeding_and_overflow() {
        let mut p = SseParser::new();
        let mut n = 0;
        for b in b"data: 1\n\ndata: 2\n\n" {
            n += p.feed(&[*b]).len();
        }
        assert_eq!(n, 2);
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        p.feed(b"data: ");
        p.feed(&big);
        assert!(p.overflowed());
        assert_eq!(last_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(last_event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(last_event_end(b"data: a"), None);
    }
}
