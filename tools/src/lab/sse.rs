//! A `text/event-stream` parser (the HTML Living Standard, "Server-sent
//! events", §9.2.6 "Interpreting an event stream"): pure, bytes in, events
//! out. The lab's `sse` clients read Rally's SSE mode with it
//! (PROTOCOL.md §11.1: an `event: session` first, then one `data:` line of
//! base64 per server message). Handles what an `EventSource` handles:
//! LF, CR or CRLF line ends, comments, multi-line data, one optional space
//! after the colon; not `id`/`retry` (Rally sends neither).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty for the default type, `message`.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event-stream line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("the event stream is not UTF-8")]
    NotUtf8,
}

/// Feed it the body as it arrives; it returns the events completed.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The last byte fed was a CR: a LF right after it ends no line.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

/// Longest line kept: a base64 server message (64 KiB at most, §8) fits.
pub const MAX_LINE: usize = 96 * 1024;

impl SseParser {
    /// Parses `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        for &b in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => self.end_line(out)?,
                _ => {
                    if self.line.len() == MAX_LINE {
                        return Err(SseError::LineTooLong(MAX_LINE));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<Event>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            // A blank line dispatches the event, if it has data.
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if std::mem::take(&mut self.has_data) {
                out.push(Event { event, data });
            }
            return Ok(());
        }
        let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: &str, data: &str) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn rallys_stream_parses_whatever_the_chunking() {
        let body = b"event: session\ndata: 00ff\n\ndata: AQI=\n\ndata: hQ==\n\n";
        let want = vec![ev("session", "00ff"), ev("", "AQI="), ev("", "hQ==")];
        assert_eq!(parse(&[body]), want);
        // Byte by byte: events complete only at their blank line.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse(&bytes), want);
        assert_eq!(parse(&[&body[..20]]), vec![]);
    }

    #[test]
    fn line_ends_comments_and_multiline_data() {
        assert_eq!(
            parse(&[b": keep-alive\r\ndata:a\r\ndata: b\r\r\ndata\n\nevent: x\n\n"]),
            vec![ev("", "a\nb"), ev("", "")]
        );
        // A CR at the end of one chunk and a LF at the start of the next
        // are one line end.
        assert_eq!(parse(&[b"data: a\r", b"\n\r", b"\n"]), vec![ev("", "a")]);
    }

    #[test]
    fn long_lines_and_bad_utf8_are_errors() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(
            p.feed(&long, &mut out),
            Err(SseError::LineTooLong(MAX_LINE))
        );
        let mut p = SseParser::default();
        assert_eq!(p.feed(b"data: \xff\n", &mut out), Err(SseError::NotUtf8));
    }
}
