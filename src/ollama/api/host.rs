//! Where the Ollama server listens: `OLLAMA_HOST` read as Ollama's own client reads it.

use std::fmt;

/// The environment variable naming the server.
pub const HOST_VAR: &str = "OLLAMA_HOST";
/// The port Ollama listens on when `OLLAMA_HOST` names none (and no scheme).
pub const DEFAULT_PORT: u16 = 11434;

/// The base URL of an Ollama server: `scheme://host:port[/path]`, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaHost {
    url: String,
}

impl OllamaHost {
    /// The server `OLLAMA_HOST` names, `http://127.0.0.1:11434` when it is unset or empty.
    pub fn from_env() -> OllamaHost {
        OllamaHost::parse(&std::env::var(HOST_VAR).unwrap_or_default())
    }

    /// Reads `value` as Ollama's envconfig.Host does (envconfig/config.go):
    ///
    /// - surrounding spaces, then quotes, are not part of it (`envconfig.Var`);
    /// - without `scheme://` the scheme is `http` and the default port 11434; with `http://` the
    ///   default port is 80, with `https://` 443;
    /// - what follows the first `/` after the host is a path prefix;
    /// - `host:port`, `[ipv6]:port`, a bare host or IP address, or nothing (`127.0.0.1`); a port
    ///   that is not a number from 0 to 65535 is replaced by the default.
    pub fn parse(value: &str) -> OllamaHost {
        let value = value.trim().trim_matches(['"', '\'']);
        let (scheme, rest, default_port) = match value.split_once("://") {
            None => ("http", value, DEFAULT_PORT),
            Some(("http", rest)) => ("http", rest, 80),
            Some(("https", rest)) => ("https", rest, 443),
            Some((scheme, rest)) => (scheme, rest, DEFAULT_PORT),
        };
        let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match split_host_port(hostport) {
            Some((host, port)) => (host.to_owned(), port),
            None => {
                let bare = hostport.trim_start_matches('[').trim_end_matches(']');
                let host = if bare.is_empty() { "127.0.0.1" } else { bare };
                (host.to_owned(), String::new())
            }
        };
        let host = if host.is_empty() { "127.0.0.1".to_owned() } else { host };
        let port = port.parse::<u16>().unwrap_or(default_port);
        // net.JoinHostPort brackets IPv6 addresses.
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let path = path.trim_end_matches('/');
        let url = if path.is_empty() {
            format!("{scheme}://{host}:{port}")
        } else {
            format!("{scheme}://{host}:{port}/{path}")
        };
        OllamaHost { url }
    }

    /// The base URL, e.g. `http://127.0.0.1:11434`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for OllamaHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`; `None` when there is no port (or
/// more than one `:` outside brackets).
fn split_host_port(s: &str) -> Option<(&str, String)> {
    if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port.to_owned()));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_host_forms_read_as_ollama_reads_them() {
        for (value, url) in [
            ("", "http://127.0.0.1:11434"),
            ("  ", "http://127.0.0.1:11434"),
            ("0.0.0.0", "http://0.0.0.0:11434"),
            ("example.com", "http://example.com:11434"),
            ("127.0.0.1:5000", "http://127.0.0.1:5000"),
            (":5000", "http://127.0.0.1:5000"),
            ("\"127.0.0.1:5000\"", "http://127.0.0.1:5000"),
            ("http://example.com", "http://example.com:80"),
            ("https://example.com", "https://example.com:443"),
            ("https://example.com:8443/ollama/", "https://example.com:8443/ollama"),
            ("[::1]:5000", "http://[::1]:5000"),
            ("::1", "http://[::1]:11434"),
            ("example.com:99999", "http://example.com:11434"),
        ] {
            assert_eq!(OllamaHost::parse(value).url(), url, "{value:?}");
        }
    }
}
