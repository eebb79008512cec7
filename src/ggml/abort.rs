//! What ggml's aborts become while RPC servers' devices are in use.
//!
//! ggml's RPC client has no way to report a failed send or receive to its caller: when a server
//! stops answering in the middle of a run (killed, crashed, its machine gone), `ggml-rpc.cpp`
//! calls `GGML_ABORT`, which prints a line and a backtrace and calls `abort()` (SIGABRT, a core
//! dump). This module installs ggml's abort callback ([`install`], from [`super::Runtime::get`]).
//! When the abort comes from ggml's RPC code (`ggml-rpc.cpp` or its `transport.cpp`, named in the
//! message ggml formats) and an RPC server has been added in this process, the callback removes
//! the temporary files of unfinished outputs ([`crate::io::mmap::remove_temporary_outputs`]),
//! prints one line naming the server(s) that stopped answering and the last checkpoint when
//! training set one ([`set_last_checkpoint`]), and ends the process with exit code
//! [`EXIT_DEVICE_LOST`] (4, an I/O failure, as for a server that cannot be reached at the start).
//! Every other abort keeps ggml's behaviour: the message, the backtrace, `abort()`.
//!
//! The process ends with `_exit`, not `std::process::exit`: the abort happens inside ggml, on
//! whichever thread was talking to the server, while other threads (ggml's CPU workers, the
//! progress bar's ticker) run and the aborting thread may hold ggml's locks (the RPC client's
//! socket mutex). `exit` would run C `atexit` handlers and C++ static destructors (ggml's backend
//! registry, llama.cpp's globals) under those threads and locks, and flush stdio buffers that hold
//! a partial result; `_exit` does none of that. What the line says is written with `write(2)`.
//!
//! There is no check between two steps: ggml's server serves one client at a time and listens
//! with a backlog of one, so probing connections while a run's own connection is open fill its
//! queue and time out. A server that died between two steps ends the run here, at the next step.

use std::ffi::{c_char, CStr};
use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock, PoisonError};
use std::time::Duration;

use llama_cpp_sys_2 as sys;

use super::device_spec::RpcEndpoint;
use super::rpc::RpcError;

/// The exit code after an RPC server stopped answering mid-run: 4, an I/O failure.
pub const EXIT_DEVICE_LOST: i32 = 4;

/// How long the abort callback waits for a server to accept a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// RPC servers added in this process ([`super::add_rpc_server`]), in the order added.
static RPC_SERVERS: Mutex<Vec<RpcEndpoint>> = Mutex::new(Vec::new());

/// The newest checkpoint the running job wrote, if it set one.
static LAST_CHECKPOINT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// ggml's abort callback before ours (none unless something else installed one first).
static PREVIOUS: OnceLock<sys::ggml_abort_callback_t> = OnceLock::new();

extern "C" {
    /// `void ggml_print_backtrace(void)` (ggml.c, declared in ggml-impl.h): the backtrace ggml
    /// prints on an abort when no callback is installed.
    fn ggml_print_backtrace();
}

/// Installs the abort callback, once per process.
pub(super) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: sets a global function pointer in ggml; `on_ggml_abort` has the C signature
        // ggml calls, never unwinds, and lives as long as the program.
        let previous = unsafe { sys::ggml_set_abort_callback(Some(on_ggml_abort)) };
        let _ = PREVIOUS.set(previous);
    });
}

/// Notes that the devices of the RPC server at `endpoint` are in use in this process (called by
/// [`super::add_rpc_server`]).
pub(super) fn note_rpc_server(endpoint: &RpcEndpoint) {
    let mut servers = RPC_SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    if !servers.contains(endpoint) {
        servers.push(endpoint.clone());
    }
}

/// Sets (or with `None` clears) the checkpoint that the line printed when an RPC server stops
/// answering names, with how to continue from it. Training calls it after each checkpoint it
/// writes.
pub fn set_last_checkpoint(path: Option<&Path>) {
    *LAST_CHECKPOINT.lock().unwrap_or_else(PoisonError::into_inner) = path.map(Path::to_owned);
}

/// Whether the RPC server at `endpoint` still accepts connections, for naming the lost ones when
/// ggml aborts: a TCP connection, opened and closed, within a short timeout. It does not greet
/// the server ([`super::greet_rpc_server`]): ggml's server serves one client at a time, and while
/// this process's own connection is open it would not answer.
fn check_rpc_alive(endpoint: &RpcEndpoint) -> Result<(), RpcError> {
    let addr = endpoint_address(endpoint)?;
    TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map(drop)
        .map_err(|source| RpcError::Unreachable { endpoint: endpoint.clone(), source })
}

fn endpoint_address(endpoint: &RpcEndpoint) -> Result<std::net::SocketAddr, RpcError> {
    let unknown = |source| RpcError::UnknownHost { endpoint: endpoint.clone(), source };
    (endpoint.host(), endpoint.port())
        .to_socket_addrs()
        .map_err(|e| unknown(Some(e)))?
        .find(std::net::SocketAddr::is_ipv4)
        .ok_or_else(|| unknown(None))
}

/// Whether ggml's abort `message` (`"FILE:LINE: text"`) comes from its RPC client.
fn is_rpc_abort(message: &str) -> bool {
    let file = message.split(':').next().unwrap_or_default();
    let name = file.rsplit(['/', '\\']).next().unwrap_or_default();
    matches!(name, "ggml-rpc.cpp" | "transport.cpp")
}

/// The line printed when RPC servers stop answering: the servers named in `lost` (those that no
/// longer accept connections, or all in use when that cannot be told), ggml's text without its
/// source location, and the checkpoint to resume from.
fn lost_line(lost: &[RpcEndpoint], message: &str, checkpoint: Option<&Path>) -> String {
    let text = message.splitn(3, ':').nth(2).map_or(message, str::trim).trim_end();
    let names: Vec<String> = lost.iter().map(|e| format!("rpc:{e}")).collect();
    let noun = if lost.len() == 1 { "device" } else { "devices" };
    let mut line = format!("error: rpc {noun} {} stopped answering (ggml: {text})", names.join(", "));
    if let Some(path) = checkpoint {
        line.push_str(&format!(
            "; the last checkpoint is {}, `--resume` continues from it on the devices available then",
            path.display()
        ));
    }
    line.push('\n');
    line
}

/// ggml's abort callback: see the module's documentation.
extern "C" fn on_ggml_abort(message: *const c_char) {
    let handled = std::panic::catch_unwind(|| {
        if message.is_null() {
            return;
        }
        // SAFETY: ggml passes its NUL-terminated message buffer, alive for the call.
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
        if !is_rpc_abort(&text) {
            return;
        }
        // try_lock: the thread that aborted may be one that holds a lock (never inside ggml, but
        // a poisoned or held lock must not hang the exit).
        let in_use: Vec<RpcEndpoint> = match RPC_SERVERS.try_lock() {
            Ok(servers) => servers.clone(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
            Err(std::sync::TryLockError::WouldBlock) => Vec::new(),
        };
        if in_use.is_empty() {
            return;
        }
        let lost: Vec<RpcEndpoint> = in_use.iter().filter(|e| check_rpc_alive(e).is_err()).cloned().collect();
        let named = if lost.is_empty() { &in_use } else { &lost };
        let checkpoint = LAST_CHECKPOINT.try_lock().ok().and_then(|c| c.clone());
        let line = lost_line(named, &text, checkpoint.as_deref());
        crate::io::mmap::remove_temporary_outputs();
        write_stderr(line.as_bytes());
        // SAFETY: _exit ends the process at once, running no destructors and no atexit handler
        // (the module's documentation says why).
        unsafe { libc::_exit(EXIT_DEVICE_LOST) };
    });
    let _ = handled;
    // Not an RPC server going away: what ggml does without a callback, or the previous one.
    match PREVIOUS.get().copied().flatten() {
        // SAFETY: a callback someone installed before ours, with ggml's signature.
        Some(previous) => unsafe { previous(message) },
        None => {
            if !message.is_null() {
                // SAFETY: as above, ggml's NUL-terminated message.
                let text = unsafe { CStr::from_ptr(message) }.to_bytes();
                let _ = std::io::stderr().write_all(&[text, b"\n"].concat());
            }
            // SAFETY: takes no arguments; prints the backtrace of this thread to stderr.
            unsafe { ggml_print_backtrace() };
        }
    }
}

/// Writes `bytes` to stderr with `write(2)`, retrying short and interrupted writes.
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length come from the same live slice.
        let written = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(written) {
            Ok(n) if n > 0 => bytes = bytes.get(n..).unwrap_or(&[]),
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_aborts_are_told_by_ggml_s_source_file() {
        let rpc = "/root/.cargo/registry/src/x/llama.cpp/ggml/src/ggml-rpc/ggml-rpc.cpp:35: Remote RPC server crashed or returned malformed response";
        assert!(is_rpc_abort(rpc));
        assert!(is_rpc_abort("ggml/src/ggml-rpc/transport.cpp:12: RPC transport initialization failed"));
        assert!(!is_rpc_abort("/x/ggml/src/ggml.c:1234: GGML_ASSERT(a->ne[0] == b->ne[0]) failed"));
        assert!(!is_rpc_abort("/x/ggml/src/ggml-cpu/ops.cpp:99: fatal error"));
        assert!(!is_rpc_abort(""));
    }

    #[test]
    fn the_line_names_the_servers_ggml_s_text_and_the_checkpoint() {
        let a: RpcEndpoint = "127.0.0.1:50052".parse().unwrap();
        let b: RpcEndpoint = "gpu-box:7000".parse().unwrap();
        let message = "/x/ggml-rpc.cpp:35: Remote RPC server crashed or returned malformed response";
        assert_eq!(
            lost_line(std::slice::from_ref(&a), message, None),
            "error: rpc device rpc:127.0.0.1:50052 stopped answering (ggml: Remote RPC server crashed or returned malformed response)\n"
        );
        assert_eq!(
            lost_line(&[a, b], message, Some(Path::new("out/checkpoint-40.gguf"))),
            "error: rpc devices rpc:127.0.0.1:50052, rpc:gpu-box:7000 stopped answering (ggml: Remote RPC server crashed or returned malformed response); the last checkpoint is out/checkpoint-40.gguf, `--resume` continues from it on the devices available then\n"
        );
    }
}
