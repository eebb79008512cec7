//! The request line and headers of an HTTP/1.1 request, as the tests' stand-in servers
//! (hub_server, ollama_server) read them.

use std::io::BufRead;

/// A request's method, path and headers (names lowercased).
pub struct RequestHead {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    /// Reads the request line and the headers up to the blank line; `None` when the client
    /// closed the connection first.
    pub fn read(reader: &mut impl BufRead) -> Option<RequestHead> {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).ok()? == 0 {
            return None;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.trim_end().split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("/").to_owned();
        Some(RequestHead { method, path, headers })
    }

    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}
