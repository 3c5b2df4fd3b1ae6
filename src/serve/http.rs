//! One HTTP/1.x exchange on a connection, on the server's one thread, as
//! defensively as a debug endpoint must be: the whole exchange has a
//! deadline (a client that sends nothing, half a request, or reads the
//! answer slowly is dropped when it passes), the request head is capped,
//! and nothing a client sends can do more than earn it a 4xx. Every wait
//! is cut into short slices that look at the stop flag, so stopping the
//! server never waits on a client.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one client may take, to send its request and, separately, to
/// read the answer.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// The largest request head taken (Go's client sends ~200 bytes).
const MAX_HEAD: usize = 8 * 1024;
/// How long a read or write waits before it looks at the stop flag.
const SLICE: Duration = Duration::from_millis(100);

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// GET of a path (the query string, e.g. Go's `?gc=1`, left off).
    Get(String),
    /// Answered with this status and nothing else.
    Refused(u16),
}

/// Reads one request head. None when there is nothing to answer: the
/// client went away, was too slow, or the server is stopping.
pub fn read_request(stream: &mut TcpStream, stopping: &AtomicBool) -> Option<Request> {
    let deadline = Instant::now() + DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !ends_head(&head) {
        if head.len() > MAX_HEAD {
            return Some(Request::Refused(431));
        }
        let n = in_slices(stream, deadline, stopping, |s| s.read(&mut buffer))?;
        if n == 0 {
            return None; // closed before a whole head
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Some(parse_head(&head))
}

fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

fn parse_head(head: &[u8]) -> Request {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Refused(400);
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Refused(400);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Refused(400);
    }
    if method != "GET" {
        return Request::Refused(405);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Request::Get(path.to_string())
}

/// Writes a whole response: status, the headers every answer has, and
/// `body`. Gives up (the client is dropped) at the deadline.
pub fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    stopping: &AtomicBool,
) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + DEADLINE;
    for mut part in [head.as_bytes(), body] {
        while !part.is_empty() {
            match in_slices(stream, deadline, stopping, |s| s.write(part)) {
                Some(0) | None => return,
                Some(n) => part = &part[n..],
            }
        }
    }
    let _ = stream.flush();
}

/// Runs one read or write, retried in `SLICE`-long waits until it does
/// something, the deadline passes or the server stops (None then, and on
/// an error).
fn in_slices(
    stream: &mut TcpStream,
    deadline: Instant,
    stopping: &AtomicBool,
    mut io: impl FnMut(&mut TcpStream) -> std::io::Result<usize>,
) -> Option<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stopping.load(Ordering::Acquire) {
            return None;
        }
        let slice = Some(left.min(SLICE));
        stream.set_read_timeout(slice).ok()?;
        stream.set_write_timeout(slice).ok()?;
        match io(stream) {
            Ok(n) => return Some(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_is_its_path_without_the_query() {
        let head = b"GET /debug/pprof/heap?gc=1&seconds=5 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse_head(head), Request::Get("/debug/pprof/heap".into()));
        assert_eq!(parse_head(b"GET / HTTP/1.0\n\n"), Request::Get("/".into()));
    }

    #[test]
    fn anything_else_is_refused_with_a_status() {
        assert_eq!(
            parse_head(b"POST /x HTTP/1.1\r\n\r\n"),
            Request::Refused(405)
        );
        for bad in [
            &b"\xff\xfe garbage\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Request::Refused(400), "{bad:?}");
        }
    }
}
