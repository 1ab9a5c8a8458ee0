//! Splitting the config stream's body into NDJSON lines with a bounded
//! buffer: the body arrives in chunks of any size, a line may span many of
//! them, and a line longer than the limit is an error before it is fully
//! buffered. Pure; the stream reader pushes chunks and pops lines.

use bytes::{Bytes, BytesMut};

/// A line longer than the limit; the connection must be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a config stream line is over the {max}-byte limit")]
pub struct LineTooLong {
    pub max: usize,
}

/// Bytes received but not yet returned as lines.
#[derive(Debug)]
pub struct LineBuffer {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    max: usize,
}

impl LineBuffer {
    /// A buffer that refuses lines longer than `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        LineBuffer {
            buf: BytesMut::new(),
            scanned: 0,
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line without its `\n` (and a `\r` before it), if
    /// there is one; blank lines are skipped. Errors when the line being
    /// received is already longer than the limit.
    pub fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        loop {
            let Some(offset) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                return match self.buf.len() > self.max {
                    true => Err(LineTooLong { max: self.max }),
                    false => Ok(None),
                };
            };
            let end = self.scanned + offset;
            let mut line = self.buf.split_to(end + 1).freeze();
            self.scanned = 0;
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            if line.len() > self.max {
                return Err(LineTooLong { max: self.max });
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
    }

    /// Bytes received after the last complete line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut LineBuffer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = b.next_line().unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn lines_span_chunks_and_chunks_hold_many_lines() {
        let mut b = LineBuffer::new(100);
        b.push(b"{\"a\":");
        assert_eq!(drain(&mut b), Vec::<String>::new());
        b.push(b"1}\n{\"b\"");
        assert_eq!(drain(&mut b), ["{\"a\":1}"]);
        b.push(b":2}\r\n\n  \n{\"c\":3}\n{\"d\"");
        assert_eq!(drain(&mut b), ["{\"b\":2}", "{\"c\":3}"]);
        assert_eq!(b.pending(), 4);
        b.push(b":4}\n");
        assert_eq!(drain(&mut b), ["{\"d\":4}"]);
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn a_line_at_the_limit_passes_and_one_over_fails() {
        let mut b = LineBuffer::new(4);
        b.push(b"abcd\n");
        assert_eq!(drain(&mut b), ["abcd"]);
        b.push(b"abcde\n");
        assert_eq!(b.next_line(), Err(LineTooLong { max: 4 }));
    }

    #[test]
    fn an_unfinished_line_over_the_limit_fails_before_its_end() {
        let mut b = LineBuffer::new(4);
        b.push(b"abc");
        assert_eq!(b.next_line(), Ok(None));
        b.push(b"de");
        assert_eq!(b.next_line(), Err(LineTooLong { max: 4 }));
    }

    #[test]
    fn byte_by_byte_gives_the_same_lines() {
        let text = b"one\ntwo\r\n\nthree\n";
        let mut b = LineBuffer::new(10);
        let mut out = Vec::new();
        for byte in text {
            b.push(&[*byte]);
            out.extend(drain(&mut b));
        }
        assert_eq!(out, ["one", "two", "three"]);
    }
}
