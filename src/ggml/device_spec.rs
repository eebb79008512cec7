//! Device specifications as users write them (`--device cpu`, `cuda:1`, `rpc:10.0.0.2:50052`,
//! or a comma-separated list), parsed before any device is looked up. Which of them this build
//! and this machine have is [`super::device`]'s question.

use std::fmt;
use std::str::FromStr;

/// What `--device` accepts, for error messages and help texts.
pub const ACCEPTED_DEVICES: &str = "cpu, cuda[:N], metal, vulkan[:N] or rpc:HOST:PORT";

/// One device as a user names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// The CPU backend.
    Cpu,
    /// The CUDA device of this index (0 when none is given).
    Cuda(u32),
    /// The Metal device.
    Metal,
    /// The Vulkan device of this index (0 when none is given).
    Vulkan(u32),
    /// Every device a `gguftune rpc-server` (or llama.cpp's `rpc-server`) serves at this endpoint.
    Rpc(RpcEndpoint),
}

/// Where an RPC server listens: a host name or IPv4 address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RpcEndpoint {
    host: String,
    port: u16,
}

/// A non-empty list of distinct devices, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(Vec<DeviceSpec>);

/// A device specification that is not one: the item, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device '{item}': {kind}")]
pub struct DeviceSpecError {
    /// The item of the list as written.
    pub item: String,
    /// What is wrong with it.
    pub kind: DeviceSpecErrorKind,
}

/// What is wrong with a device specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceSpecErrorKind {
    #[error("empty (expected {ACCEPTED_DEVICES})")]
    Empty,
    #[error("unknown device kind '{kind}' (expected {ACCEPTED_DEVICES})")]
    UnknownKind { kind: String },
    #[error("'{kind}' takes no index (expected {ACCEPTED_DEVICES})")]
    NoIndexTaken { kind: &'static str },
    #[error("index '{index}' is not a device number (expected {kind}:N with N = 0, 1, ...)")]
    BadIndex { kind: &'static str, index: String },
    #[error("expected rpc:HOST:PORT")]
    MissingPort,
    #[error("the host is empty (expected rpc:HOST:PORT)")]
    EmptyHost,
    #[error("host '{host}' has a ':' (ggml's RPC client takes a host name or an IPv4 address, not IPv6)")]
    HostWithColon { host: String },
    #[error("host '{host}' has a space or control character")]
    BadHost { host: String },
    #[error("port '{port}' is not a number from 1 to 65535")]
    BadPort { port: String },
    #[error("named twice in the list")]
    Duplicate,
}

impl RpcEndpoint {
    /// The endpoint `host:port`; the host is a name or an IPv4 address (ggml's RPC client resolves
    /// names with `gethostbyname`, IPv4 only), the port from 1 to 65535.
    pub fn new(host: &str, port: &str) -> Result<RpcEndpoint, DeviceSpecErrorKind> {
        if host.is_empty() {
            return Err(DeviceSpecErrorKind::EmptyHost);
        }
        if host.contains(':') {
            return Err(DeviceSpecErrorKind::HostWithColon { host: host.to_owned() });
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DeviceSpecErrorKind::BadHost { host: host.to_owned() });
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| DeviceSpecErrorKind::BadPort { port: port.to_owned() })?;
        Ok(RpcEndpoint { host: host.to_owned(), port })
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for RpcEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for RpcEndpoint {
    type Err = DeviceSpecError;

    /// `HOST:PORT`, or `rpc:HOST:PORT` as in a device list.
    fn from_str(s: &str) -> Result<RpcEndpoint, DeviceSpecError> {
        let error = |kind| DeviceSpecError { item: s.to_owned(), kind };
        let bare = s.strip_prefix("rpc:").unwrap_or(s);
        let (host, port) = bare.rsplit_once(':').ok_or_else(|| error(DeviceSpecErrorKind::MissingPort))?;
        RpcEndpoint::new(host, port).map_err(error)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Metal => write!(f, "metal"),
            DeviceSpec::Vulkan(i) => write!(f, "vulkan:{i}"),
            DeviceSpec::Rpc(endpoint) => write!(f, "rpc:{endpoint}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    /// One of `cpu`, `cuda[:N]`, `metal`, `vulkan[:N]`, `rpc:HOST:PORT` (the kind in any case).
    fn from_str(s: &str) -> Result<DeviceSpec, DeviceSpecError> {
        let item = s.trim();
        let error = |kind| DeviceSpecError { item: item.to_owned(), kind };
        if item.is_empty() {
            return Err(error(DeviceSpecErrorKind::Empty));
        }
        let (kind, rest) = match item.split_once(':') {
            Some((kind, rest)) => (kind.to_ascii_lowercase(), Some(rest)),
            None => (item.to_ascii_lowercase(), None),
        };
        let index = |kind: &'static str| -> Result<u32, DeviceSpecError> {
            match rest {
                None => Ok(0),
                Some(n) => n.parse().map_err(|_| error(DeviceSpecErrorKind::BadIndex { kind, index: n.to_owned() })),
            }
        };
        let no_index = |kind: &'static str, spec: DeviceSpec| match rest {
            None => Ok(spec),
            Some(_) => Err(error(DeviceSpecErrorKind::NoIndexTaken { kind })),
        };
        match kind.as_str() {
            "cpu" => no_index("cpu", DeviceSpec::Cpu),
            "metal" => no_index("metal", DeviceSpec::Metal),
            "cuda" => Ok(DeviceSpec::Cuda(index("cuda")?)),
            "vulkan" => Ok(DeviceSpec::Vulkan(index("vulkan")?)),
            "rpc" => {
                let (host, port) =
                    rest.and_then(|r| r.rsplit_once(':')).ok_or_else(|| error(DeviceSpecErrorKind::MissingPort))?;
                Ok(DeviceSpec::Rpc(RpcEndpoint::new(host, port).map_err(error)?))
            }
            _ => Err(error(DeviceSpecErrorKind::UnknownKind { kind })),
        }
    }
}

impl DeviceList {
    /// The devices, in the order given.
    pub fn specs(&self) -> &[DeviceSpec] {
        &self.0
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, spec) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{spec}")?;
        }
        Ok(())
    }
}

impl FromStr for DeviceList {
    type Err = DeviceSpecError;

    /// A comma-separated list of [`DeviceSpec`]s, none twice.
    fn from_str(s: &str) -> Result<DeviceList, DeviceSpecError> {
        let mut specs: Vec<DeviceSpec> = Vec::new();
        for item in s.split(',') {
            let spec: DeviceSpec = item.parse()?;
            if specs.contains(&spec) {
                return Err(DeviceSpecError { item: item.trim().to_owned(), kind: DeviceSpecErrorKind::Duplicate });
            }
            specs.push(spec);
        }
        Ok(DeviceList(specs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(s: &str) -> DeviceSpecErrorKind {
        s.parse::<DeviceList>().unwrap_err().kind
    }

    #[test]
    fn every_kind_parses_and_prints_back() {
        let list: DeviceList = "cpu, CUDA, cuda:1,metal,vulkan:2,rpc:127.0.0.1:50052,rpc:gpu-box:7000".parse().unwrap();
        assert_eq!(
            list.specs(),
            [
                DeviceSpec::Cpu,
                DeviceSpec::Cuda(0),
                DeviceSpec::Cuda(1),
                DeviceSpec::Metal,
                DeviceSpec::Vulkan(2),
                DeviceSpec::Rpc(RpcEndpoint::new("127.0.0.1", "50052").unwrap()),
                DeviceSpec::Rpc(RpcEndpoint::new("gpu-box", "7000").unwrap()),
            ]
        );
        assert_eq!(list.to_string(), "cpu,cuda:0,cuda:1,metal,vulkan:2,rpc:127.0.0.1:50052,rpc:gpu-box:7000");
        assert_eq!(list.to_string().parse::<DeviceList>().unwrap(), list);
    }

    #[test]
    fn bad_items_are_named_with_what_is_accepted() {
        let err = "cpu,gpu".parse::<DeviceList>().unwrap_err();
        assert_eq!(err.item, "gpu");
        assert_eq!(err.kind, DeviceSpecErrorKind::UnknownKind { kind: "gpu".into() });
        assert_eq!(
            err.to_string(),
            "device 'gpu': unknown device kind 'gpu' (expected cpu, cuda[:N], metal, vulkan[:N] or rpc:HOST:PORT)"
        );
        assert_eq!(kind_of("cpu,"), DeviceSpecErrorKind::Empty);
        assert_eq!(kind_of(""), DeviceSpecErrorKind::Empty);
        assert_eq!(kind_of("cpu:0"), DeviceSpecErrorKind::NoIndexTaken { kind: "cpu" });
        assert_eq!(kind_of("metal:1"), DeviceSpecErrorKind::NoIndexTaken { kind: "metal" });
        assert_eq!(kind_of("cuda:x"), DeviceSpecErrorKind::BadIndex { kind: "cuda", index: "x".into() });
        assert_eq!(kind_of("vulkan:-1"), DeviceSpecErrorKind::BadIndex { kind: "vulkan", index: "-1".into() });
        assert_eq!(kind_of("cpu,cuda:0,cuda"), DeviceSpecErrorKind::Duplicate);
        assert_eq!("cpu,cuda:0,cuda".parse::<DeviceList>().unwrap_err().item, "cuda");
    }

    #[test]
    fn rpc_endpoints_are_checked() {
        assert_eq!(kind_of("rpc"), DeviceSpecErrorKind::MissingPort);
        assert_eq!(kind_of("rpc:host"), DeviceSpecErrorKind::MissingPort);
        assert_eq!(kind_of("rpc::50052"), DeviceSpecErrorKind::EmptyHost);
        assert_eq!(kind_of("rpc:::1:50052"), DeviceSpecErrorKind::HostWithColon { host: "::1".into() });
        assert_eq!(kind_of("rpc:a b:1"), DeviceSpecErrorKind::BadHost { host: "a b".into() });
        for port in ["0", "65536", "x", ""] {
            assert_eq!(kind_of(&format!("rpc:h:{port}")), DeviceSpecErrorKind::BadPort { port: port.into() });
        }
        let endpoint: RpcEndpoint = "10.0.0.2:65535".parse().unwrap();
        assert_eq!(
            (endpoint.host(), endpoint.port(), endpoint.to_string()),
            ("10.0.0.2", 65535, "10.0.0.2:65535".into())
        );
        assert_eq!("rpc:10.0.0.2:65535".parse::<RpcEndpoint>().unwrap(), endpoint);
        assert_eq!("10.0.0.2".parse::<RpcEndpoint>().unwrap_err().kind, DeviceSpecErrorKind::MissingPort);
    }
}
