//! A real `gguftune rpc-server` child process for the device tests: ggml's RPC backend serving
//! this machine's CPU, reached as a GPU would be.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use gguftune::ggml::RpcEndpoint;

/// CPU threads of both the server's and the local CPU backend: the same row split on both.
pub const THREADS: usize = 2;

/// Serializes the tests that talk to RPC servers: hold the guard for the whole test. ggml opens
/// its client sockets without close-on-exec, so a server started by one test while another test
/// of this process holds a connection inherits that connection; when the other test closes its
/// end and connects again, its server still serves the inherited, never-closed one and never
/// answers (a hang, seen with two device tests in parallel).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A test that failed while holding it leaves nothing the next one relies on.
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `gguftune rpc-server` child process, killed when dropped (also when a test panics).
pub struct Server {
    /// The process (a test may kill it).
    pub child: Child,
    stderr: BufReader<ChildStderr>,
    /// Where it listens.
    pub endpoint: RpcEndpoint,
}

impl Server {
    /// Starts `gguftune rpc-server --host HOST --port <a free port> --threads 2` and returns once
    /// it printed the line naming what it serves (the lines before it: `before`) and accepts
    /// connections.
    pub fn start(host: Ipv4Addr) -> (Server, Vec<String>) {
        Server::start_with(host, &[])
    }

    /// As [`Server::start`], with `extra` arguments (`--cache DIR`).
    pub fn start_with(host: Ipv4Addr, extra: &[&str]) -> (Server, Vec<String>) {
        let port = free_port(host);
        let child = Command::new(env!("CARGO_BIN_EXE_gguftune"))
            .args(["rpc-server", "--host", &host.to_string(), "--port", &port.to_string()])
            .args(["--threads", &THREADS.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gguftune binary runs");
        let endpoint = RpcEndpoint::new(&host.to_string(), &port.to_string()).unwrap();
        let mut child = child;
        let stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let mut server = Server { child, stderr, endpoint };
        let mut before = Vec::new();
        loop {
            let line = server.read_line();
            if line.starts_with("gguftune rpc-server: serving") {
                before.push(line);
                break;
            }
            before.push(line);
        }
        // The line is printed right before ggml listens: connect until it does (each connection
        // that sends nothing is closed by the server, which then accepts the next).
        let address = SocketAddrV4::new(host, port);
        while TcpStream::connect(address).is_err() {
            assert!(server.child.try_wait().unwrap().is_none(), "rpc-server exited: {before:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (server, before)
    }

    /// The next line of the server's stderr (the test fails if the server ends first).
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "rpc-server ended before printing what it serves");
        line.trim_end().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of `host` no one listens on (bound by the system, then released).
pub fn free_port(host: Ipv4Addr) -> u16 {
    TcpListener::bind(SocketAddrV4::new(host, 0)).unwrap().local_addr().unwrap().port()
}
