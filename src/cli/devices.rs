//! `gguftune devices`: the ggml devices this build sees, with remote ones added.

use std::io::Write;
use std::process::ExitCode;

use super::output::{escape, human_bytes};
use gguftune::ggml::{add_rpc_server, resolve_devices, Device, DeviceInfo, DeviceList, RpcEndpoint, Runtime};

/// List the devices this build can compute on (CPU, GPUs, RPC servers' devices), with their memory.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  gguftune devices\n  gguftune devices --rpc 10.0.0.2:50052 --json\n  gguftune devices --device cpu,rpc:127.0.0.1:50052"
)]
pub struct Args {
    /// Only these devices, checked as --device is: cpu, cuda[:N], metal, vulkan[:N],
    /// rpc:HOST:PORT, or a comma-separated list.
    #[arg(long, value_name = "LIST")]
    device: Option<DeviceList>,
    /// Add the devices an RPC server serves (`gguftune rpc-server`); repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    rpc: Vec<RpcEndpoint>,
    /// Print the devices as one JSON array.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = Runtime::get();
    let mut devices = match &args.device {
        Some(list) => resolve_devices(rt, list)?,
        None => Device::all(rt),
    };
    for endpoint in &args.rpc {
        let remote: Vec<Device> = add_rpc_server(rt, endpoint)?.into_iter().filter(|d| !devices.contains(d)).collect();
        devices.extend(remote);
    }
    let infos: Vec<DeviceInfo> = devices.iter().map(Device::info).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &infos)?;
        writeln!(out)?;
    } else {
        for info in &infos {
            writeln!(
                out,
                "{:<8} {:<5} {:>10} total {:>10} free  {} ({})",
                info.name,
                serde_json::to_value(info.kind)?.as_str().unwrap_or_default(),
                human_bytes(info.memory.total),
                human_bytes(info.memory.free),
                escape(&info.description),
                escape(&info.backend),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
