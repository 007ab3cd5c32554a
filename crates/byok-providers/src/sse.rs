//! An incremental Server-Sent Events parser: feed bytes as they arrive, get whole events.

/// One event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into events (`\n`, `\r\n` or `\r` line ends; comments ignored).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    /// Largest line we keep buffering before giving up on it (protects memory).
    max_line: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self {
            max_line: 16 * 1024 * 1024,
            ..Self::default()
        }
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                let line = String::from_utf8_lossy(&self.buf[start..i]).into_owned();
                // `\r\n` is one line end.
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
        if self.buf.len() > self.max_line {
            self.buf.clear();
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if !self.data.is_empty() || self.event.is_some() {
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
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
    }

    /// Whether bytes of an unfinished event are pending (a stream that ends here was cut).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || !self.data.is_empty() || self.event.is_some()
    }
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
    }
}
