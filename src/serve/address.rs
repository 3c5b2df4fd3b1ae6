//! The address the endpoint listens on, as `HEAPSITE_HTTP`, `heapsite run
//! --http` and `heapsite.serve()` take it: `HOST:PORT` (a name, an IPv4
//! address or a bracketed IPv6 one), or just `PORT` / `:PORT`, which mean
//! loopback. Only an address given explicitly listens beyond the machine.

use std::net::{SocketAddr, ToSocketAddrs};

/// The addresses `text` names, in the resolver's order; an error a user can
/// act on otherwise.
pub fn parse(text: &str) -> Result<Vec<SocketAddr>, String> {
    let text = text.trim();
    let bad = |why: &str| {
        Err(format!(
            "bad HTTP address {text:?}: {why} (expected HOST:PORT, e.g. 127.0.0.1:6060, or a port)"
        ))
    };
    let port_only = text.strip_prefix(':').unwrap_or(text);
    let (host, port) = if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        ("127.0.0.1", port_only)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => (host, port),
            _ => return bad("no host and port"),
        }
    };
    let Ok(port) = port.parse::<u16>() else {
        return bad("the port must be a number from 0 to 65535");
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
        return bad("the host is not a name or an IP address");
    }
    match (host, port).to_socket_addrs() {
        Ok(found) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                bad("the host has no address")
            } else {
                Ok(found)
            }
        }
        Err(e) => bad(&format!("the host cannot be resolved: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> String {
        parse(text).unwrap()[0].to_string()
    }

    #[test]
    fn a_port_alone_means_loopback() {
        assert_eq!(one("6060"), "127.0.0.1:6060");
        assert_eq!(one(":6060"), "127.0.0.1:6060");
        assert_eq!(one(" 127.0.0.1:0 "), "127.0.0.1:0");
    }

    #[test]
    fn an_explicit_host_is_kept() {
        assert_eq!(one("0.0.0.0:6060"), "0.0.0.0:6060");
        assert_eq!(one("[::1]:6060"), "[::1]:6060");
        assert!(parse("localhost:6060").unwrap()[0].ip().is_loopback());
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        for text in [
            "",
            ":",
            "host:",
            "127.0.0.1:99999",
            "127.0.0.1:http",
            "a b:1",
            ":-1",
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.starts_with("bad HTTP address"), "{text}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
