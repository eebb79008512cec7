//! `gguftune rpc-server`: this build's devices served over ggml's RPC protocol.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;

use gguftune::ggml::{resolve_devices, serve_rpc, DeviceList, DeviceSpec, Runtime, ServeOptions, RPC_PROTOCOL_VERSION};

/// Serve this build's devices (the CPU by default) to other machines over ggml's RPC protocol.
#[derive(Debug, clap::Args)]
#[command(after_help = "ggml's RPC protocol has no authentication and no encryption: whoever can connect can use the \
devices and read what they hold. Listen on 127.0.0.1 (the default) or a private network only.\n\nExamples:\n  \
gguftune rpc-server --port 50052\n  gguftune rpc-server --host 0.0.0.0 --port 50052 --cache ~/.cache/gguftune-rpc")]
pub struct Args {
    /// IPv4 address to listen on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: Ipv4Addr,
    /// TCP port to listen on.
    #[arg(long, default_value_t = 50052, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Folder where large tensors sent by clients are kept by hash, so that weights sent again
    /// are not transferred again (created when missing).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Devices to serve: cpu, cuda[:N], metal, vulkan[:N], or a comma-separated list.
    #[arg(long, value_name = "LIST", default_value = "cpu")]
    device: DeviceList,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(remote) = args.device.specs().iter().find(|s| matches!(s, DeviceSpec::Rpc(_))) {
        anyhow::bail!("--device {remote}: rpc-server serves this machine's devices, not another server's");
    }
    let address = SocketAddrV4::new(args.host, args.port);
    let rt = Runtime::get();
    let devices = resolve_devices(rt, &args.device)?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let options = ServeOptions { address, cache: args.cache.as_deref(), threads, devices: &devices };
    match serve_rpc(&options, || {
        if !args.host.is_loopback() {
            eprintln!(
                "warning: listening on {address}, not a loopback address: ggml's RPC protocol has no authentication, anyone who can connect can use these devices"
            );
        }
        let names: Vec<String> = devices.iter().map(|d| format!("{} ({})", d.name(), d.description())).collect();
        eprintln!(
            "gguftune rpc-server: serving {} on {address} (ggml RPC protocol {RPC_PROTOCOL_VERSION}, {threads} threads)",
            names.join(", ")
        );
    })? {}
}
