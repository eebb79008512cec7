//! ggml's RPC backend (`ggml-rpc.h`), compiled by build.rs from llama-cpp-sys-2's own sources:
//! remote ggml devices reached over TCP, and the server that offers this build's devices.
//!
//! ggml's RPC client aborts the process when it cannot connect to a server or the server speaks
//! another protocol version (`GGML_ABORT` in `rpc_dispatcher::start`). [`greet_rpc_server`]
//! connects and exchanges ggml's HELLO message first, so that an absent, busy or mismatched
//! server is an [`RpcError`] naming its endpoint before ggml ever connects. A server that goes
//! away while a client uses it still aborts the client (`RPC_STATUS_ASSERT`: ggml has no error
//! path there). ggml's RPC has no authentication.

use std::ffi::{c_char, CString};
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use llama_cpp_sys_2 as sys;

use super::device::Device;
use super::device_spec::RpcEndpoint;

extern "C" {
    /// `ggml_backend_reg_t ggml_backend_rpc_reg(void)`: the RPC registry entry, with no device
    /// (servers are added by [`ggml_backend_rpc_add_server`]).
    pub(super) fn ggml_backend_rpc_reg() -> sys::ggml_backend_reg_t;
    /// `ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint)`: a registry entry
    /// holding the devices the server at `endpoint` ("host:port") serves, made once per endpoint
    /// and cached; null when the server has none. Aborts when it cannot connect or greet.
    pub(super) fn ggml_backend_rpc_add_server(endpoint: *const c_char) -> sys::ggml_backend_reg_t;
    /// `void ggml_backend_rpc_start_server(const char * endpoint, const char * cache_dir,
    /// size_t n_threads, size_t n_devices, ggml_backend_dev_t * devices)`: serves the devices
    /// on `endpoint` (an IPv4 address and port), one client at a time, forever; returns only when
    /// it cannot listen or accept. Prints its banner and each connection on stdout.
    fn ggml_backend_rpc_start_server(
        endpoint: *const c_char,
        cache_dir: *const c_char,
        n_threads: usize,
        n_devices: usize,
        devices: *mut sys::ggml_backend_dev_t,
    );
}

/// ggml's RPC protocol version of this build (`RPC_PROTO_*_VERSION` in ggml-rpc.h, read by build.rs).
pub const RPC_PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion {
    major: parse_u8(env!("GGML_RPC_PROTO_MAJOR")),
    minor: parse_u8(env!("GGML_RPC_PROTO_MINOR")),
    patch: parse_u8(env!("GGML_RPC_PROTO_PATCH")),
};

/// `RPC_CMD_HELLO`: ggml-rpc.cpp asserts it is 14 in every version, so that any client and
/// server can greet each other.
const CMD_HELLO: u8 = 14;
/// Bytes of the capabilities in the HELLO request (`RPC_CONN_CAPS_SIZE` of transport.h).
const CONN_CAPS_SIZE: usize = parse_u8(env!("GGML_RPC_CONN_CAPS_SIZE")) as usize;
/// How long [`greet_rpc_server`] waits to connect and for the answer to HELLO.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// An RPC protocol version (major.minor.patch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProtocolVersion {
    /// Differs between incompatible versions.
    pub major: u8,
    /// A client accepts servers of its own minor version or an older one.
    pub minor: u8,
    /// Changes with ggml's op list (`GGML_OP_COUNT`).
    pub patch: u8,
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A failure to reach, greet or run an RPC server, naming its endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    #[error("rpc:{endpoint}: host not found")]
    UnknownHost { endpoint: RpcEndpoint, source: Option<std::io::Error> },
    #[error("rpc:{endpoint}: cannot connect (is `gguftune rpc-server --port {}` running there?)", endpoint.port())]
    Unreachable { endpoint: RpcEndpoint, source: std::io::Error },
    #[error("rpc:{endpoint}: connected, but no answer to ggml's HELLO (ggml's RPC server serves one client at a time: is another one connected?)")]
    NoAnswer { endpoint: RpcEndpoint, source: std::io::Error },
    #[error("rpc:{endpoint}: the answer to HELLO is {found} bytes, expected {expected}: not a ggml RPC server, or one of another protocol")]
    NotAServer { endpoint: RpcEndpoint, expected: usize, found: u64 },
    #[error("rpc:{endpoint}: the server speaks ggml RPC protocol {server}, this build {client}: run a server built from the same llama.cpp")]
    VersionMismatch { endpoint: RpcEndpoint, server: ProtocolVersion, client: ProtocolVersion },
    #[error("rpc:{endpoint}: the server serves no device")]
    NoDevices { endpoint: RpcEndpoint },
    #[error("rpc-server: cannot listen on {address}")]
    Listen { address: SocketAddrV4, source: std::io::Error },
    #[error("rpc-server: cache folder {}", path.display())]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("rpc-server: nothing to serve (no device given)")]
    NothingToServe,
    #[error("rpc-server: ggml's server on {address} stopped (it could not listen or accept a connection)")]
    Stopped { address: SocketAddrV4 },
}

impl RpcError {
    /// Whether this is the network failing (connecting, no answer, cannot listen): exit code 4.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            RpcError::UnknownHost { .. }
                | RpcError::Unreachable { .. }
                | RpcError::NoAnswer { .. }
                | RpcError::Listen { .. }
                | RpcError::Cache { .. }
                | RpcError::Stopped { .. }
        )
    }
}

/// Connects to the RPC server at `endpoint`, exchanges ggml's HELLO message (as
/// `ggml-rpc.cpp`'s `negotiate_hello` does, advertising no transport upgrade), checks that its
/// protocol version is one this build's client accepts (the same major version, a minor version
/// no newer), and disconnects. Returns the server's version.
pub fn greet_rpc_server(endpoint: &RpcEndpoint) -> Result<ProtocolVersion, RpcError> {
    let addr = ipv4_address(endpoint)?;
    let unreachable = |source| RpcError::Unreachable { endpoint: endpoint.clone(), source };
    let mut stream = TcpStream::connect_timeout(&addr, GREETING_TIMEOUT).map_err(unreachable)?;
    stream.set_read_timeout(Some(GREETING_TIMEOUT)).map_err(unreachable)?;
    stream.set_write_timeout(Some(GREETING_TIMEOUT)).map_err(unreachable)?;
    // | cmd (1 byte) | request size (u64) | request: the client's capabilities |
    let mut request = vec![CMD_HELLO];
    request.extend_from_slice(&(CONN_CAPS_SIZE as u64).to_le_bytes());
    request.extend_from_slice(&[0u8; CONN_CAPS_SIZE]);
    stream.write_all(&request).map_err(unreachable)?;
    // | response size (u64) | major, minor, patch, padding, the server's capabilities |
    let no_answer = |source| RpcError::NoAnswer { endpoint: endpoint.clone(), source };
    let mut size = [0u8; 8];
    stream.read_exact(&mut size).map_err(no_answer)?;
    let size = u64::from_le_bytes(size);
    let expected = 4 + CONN_CAPS_SIZE;
    if size != expected as u64 {
        return Err(RpcError::NotAServer { endpoint: endpoint.clone(), expected, found: size });
    }
    let mut response = vec![0u8; expected];
    stream.read_exact(&mut response).map_err(no_answer)?;
    let server = ProtocolVersion { major: response[0], minor: response[1], patch: response[2] };
    if server.major != RPC_PROTOCOL_VERSION.major || server.minor > RPC_PROTOCOL_VERSION.minor {
        return Err(RpcError::VersionMismatch { endpoint: endpoint.clone(), server, client: RPC_PROTOCOL_VERSION });
    }
    Ok(server)
}

/// The IPv4 address ggml's client would connect to (`gethostbyname`, IPv4 only).
fn ipv4_address(endpoint: &RpcEndpoint) -> Result<SocketAddr, RpcError> {
    let addrs = (endpoint.host(), endpoint.port())
        .to_socket_addrs()
        .map_err(|e| RpcError::UnknownHost { endpoint: endpoint.clone(), source: Some(e) })?;
    addrs
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .ok_or(RpcError::UnknownHost { endpoint: endpoint.clone(), source: None })
}

/// What [`serve_rpc`] serves, and where.
#[derive(Debug)]
pub struct ServeOptions<'a> {
    /// The address and port to listen on (ggml's server listens on one IPv4 address).
    pub address: SocketAddrV4,
    /// A folder where the server keeps large tensors it was sent, by hash, so that a client
    /// sending the same weights again sends only their hash (created when missing).
    pub cache: Option<&'a Path>,
    /// CPU threads of each backend that takes a thread count.
    pub threads: usize,
    /// The devices served (local ones: an RPC device cannot be served again).
    pub devices: &'a [Device],
}

/// Serves `options.devices` over ggml's RPC protocol (`ggml_backend_rpc_start_server`), one
/// client at a time, until the process ends. Calls `ready` once the address, the port and the
/// cache folder are checked, right before ggml starts listening. Returns only on failure: a
/// port that cannot be bound (checked by binding it once first, for the reason), a cache folder
/// that cannot be made, or ggml's server stopping.
pub fn serve_rpc(options: &ServeOptions<'_>, ready: impl FnOnce()) -> Result<std::convert::Infallible, RpcError> {
    let address = options.address;
    if options.devices.is_empty() {
        return Err(RpcError::NothingToServe);
    }
    // ggml only prints "Failed to create server socket"; binding here first gives the reason
    // (address in use, not an address of this machine). ggml binds with SO_REUSEADDR right after.
    drop(TcpListener::bind(address).map_err(|source| RpcError::Listen { address, source })?);
    let cache = match options.cache {
        Some(path) => {
            let cache_error = |source| RpcError::Cache { path: path.to_owned(), source };
            std::fs::create_dir_all(path).map_err(cache_error)?;
            Some(super::c_path(path).map_err(|_| {
                cache_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has a NUL byte"))
            })?)
        }
        None => None,
    };
    // An address and a port: no NUL byte.
    let c_endpoint = CString::new(address.to_string()).unwrap_or_default();
    let mut devices: Vec<sys::ggml_backend_dev_t> = options.devices.iter().map(Device::raw).collect();
    ready();
    // SAFETY: the endpoint is an IPv4 address and a port, the cache path a NUL-terminated
    // string or null, both alive for the call (which only returns on failure); `devices` holds
    // live devices of ggml's registry (never freed), and its length is passed. ggml initialises
    // a backend for each device.
    unsafe {
        ggml_backend_rpc_start_server(
            c_endpoint.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            options.threads.max(1),
            devices.len(),
            devices.as_mut_ptr(),
        )
    };
    Err(RpcError::Stopped { address })
}

const fn parse_u8(s: &str) -> u8 {
    let bytes = s.as_bytes();
    let mut value: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "build.rs passes a decimal number");
        value = value * 10 + (bytes[i] - b'0') as u32;
        assert!(value <= 255, "the value fits a byte");
        i += 1;
    }
    value as u8
}
