//! ggml's devices: those of its registry (the CPU, CUDA, Metal and Vulkan devices of the
//! backends compiled in), the devices of RPC servers ([`add_rpc_server`]), and the devices a
//! [`DeviceList`] names.
//!
//! RPC servers' devices are kept out of ggml's global registry (llama.cpp's `rpc-server` client
//! code registers them): llama.cpp enumerates that registry whenever it loads a model (`generate`,
//! `eval`, the oracle in tests) and queries every GPU there, which for an RPC device means
//! connecting to its server, and ggml aborts the process when that server has gone away. Only
//! code that was handed an RPC device ever talks to its server.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::sync::Mutex;

use llama_cpp_sys_2 as sys;

use super::device_spec::{DeviceList, DeviceSpec, RpcEndpoint};
use super::rpc::{self, RpcError};
use super::{Error, Runtime};

/// One ggml device: of its registry, or of an RPC server. Devices live as long as the program
/// (ggml frees neither registered devices nor RPC servers' devices), so this is a plain copyable
/// handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    raw: std::ptr::NonNull<sys::ggml_backend_device>,
}

/// What kind of device ggml says a device is (`enum ggml_backend_dev_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    /// The CPU, with system memory.
    Cpu,
    /// A GPU with its own memory (ggml also reports RPC devices as GPUs).
    Gpu,
    /// A GPU that shares the system's memory.
    Igpu,
    /// An accelerator used beside the CPU (BLAS, AMX).
    Accel,
    /// A device made of other devices.
    Meta,
}

/// Free and total memory of a device, in bytes, as its backend reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// Bytes free now.
    pub free: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What a device is, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// ggml's device name (`CPU`, `CUDA0`, `Vulkan1`, `RPC0`, ...).
    pub name: String,
    /// ggml's description (the processor or GPU model; an RPC device's endpoint).
    pub description: String,
    /// The backend (registry entry) it belongs to (`CPU`, `CUDA`, `RPC`, ...).
    pub backend: String,
    /// What kind of device it is (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: DeviceType,
    /// Its memory, as its backend reports it (an RPC device's server's).
    pub memory: Memory,
}

/// A device that cannot be had: not compiled in, not on this machine, or an RPC server that
/// cannot be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("device '{spec}': this build has no {backend} backend ({}); devices of this build: {}", rebuild_hint(*feature), available.join(", "))]
    NotCompiledIn { spec: DeviceSpec, backend: &'static str, feature: Option<&'static str>, available: Vec<String> },
    #[error("device '{spec}': no such device; {backend} devices here: {}", list_or_none(available))]
    NoSuchDevice { spec: DeviceSpec, backend: &'static str, available: Vec<String> },
    #[error("device {device}: ggml could not start its backend")]
    BackendInit { device: String },
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

impl DeviceError {
    /// Whether this is the network failing (an RPC server that cannot be reached): exit code 4.
    pub fn is_io(&self) -> bool {
        matches!(self, DeviceError::Rpc(e) if e.is_io())
    }
}

fn rebuild_hint(feature: Option<&str>) -> String {
    match feature {
        Some(feature) => format!("rebuild with --features {feature}"),
        None => "it is always compiled in".to_owned(),
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl Device {
    /// Every device of ggml's registry, in its order (GPUs, then accelerators, then the CPU); not
    /// RPC servers' devices, which [`add_rpc_server`] returns.
    pub fn all(_rt: &Runtime) -> Vec<Device> {
        // SAFETY: reads the registry's size; ggml initialises the registry on first use.
        let n = unsafe { sys::ggml_backend_dev_count() };
        // SAFETY: 0 <= i < count, so ggml_backend_dev_get returns a registered device.
        (0..n).filter_map(|i| Device::from_raw(unsafe { sys::ggml_backend_dev_get(i) })).collect()
    }

    pub(super) fn from_raw(raw: sys::ggml_backend_dev_t) -> Option<Device> {
        std::ptr::NonNull::new(raw).map(|raw| Device { raw })
    }

    pub(super) fn raw(&self) -> sys::ggml_backend_dev_t {
        self.raw.as_ptr()
    }

    /// ggml's name of the device (`CPU`, `CUDA0`, `RPC0`, ...).
    pub fn name(&self) -> String {
        // SAFETY: a registered device; ggml returns a NUL-terminated string it owns.
        c_string(unsafe { sys::ggml_backend_dev_name(self.raw()) })
    }

    /// ggml's description of the device.
    pub fn description(&self) -> String {
        // SAFETY: as in `name`.
        c_string(unsafe { sys::ggml_backend_dev_description(self.raw()) })
    }

    /// The name of the backend (registry entry) the device belongs to.
    pub fn backend_name(&self) -> String {
        // SAFETY: a registered device has a registry entry, which has a name.
        c_string(unsafe { sys::ggml_backend_reg_name(sys::ggml_backend_dev_backend_reg(self.raw())) })
    }

    /// What kind of device ggml says it is.
    pub fn kind(&self) -> DeviceType {
        // SAFETY: a registered device.
        match unsafe { sys::ggml_backend_dev_type(self.raw()) } {
            sys::GGML_BACKEND_DEVICE_TYPE_CPU => DeviceType::Cpu,
            sys::GGML_BACKEND_DEVICE_TYPE_IGPU => DeviceType::Igpu,
            sys::GGML_BACKEND_DEVICE_TYPE_ACCEL => DeviceType::Accel,
            sys::GGML_BACKEND_DEVICE_TYPE_META => DeviceType::Meta,
            _ => DeviceType::Gpu,
        }
    }

    /// Free and total memory. An RPC device asks its server, over a connection of its own when
    /// no backend of it is open: ggml aborts if that server has gone away since it was added.
    pub fn memory(&self) -> Memory {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: a registered device; both pointers are valid for one write.
        unsafe { sys::ggml_backend_dev_memory(self.raw(), &mut free, &mut total) };
        Memory { free: free as u64, total: total as u64 }
    }

    /// How a user names the device: `rpc:HOST:PORT` for an RPC server's device (all the devices
    /// of one server have that name), ggml's name (`CPU`, `CUDA0`) otherwise.
    pub fn label(&self) -> String {
        if self.backend_name() == "RPC" {
            format!("rpc:{}", self.description())
        } else {
            self.name()
        }
    }

    /// Everything a listing shows.
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.name(),
            description: self.description(),
            backend: self.backend_name(),
            kind: self.kind(),
            memory: self.memory(),
        }
    }

    /// Whether ggml says the device can compute `node` (`ggml_backend_dev_supports_op`). An RPC
    /// device answers yes to every op, custom ops included, which cannot cross the wire.
    pub fn supports(&self, node: super::Tensor<'_>) -> bool {
        // SAFETY: a registered device and a live tensor; the answer only reads the tensor.
        unsafe { sys::ggml_backend_dev_supports_op(self.raw(), node.raw()) }
    }
}

fn c_string(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml's names and descriptions are NUL-terminated strings that live as long as
    // their device.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The devices of the RPC server at `endpoint` (ggml's `ggml_backend_rpc_add_server`, which
/// makes them once per endpoint; a second call returns the same devices without connecting).
/// The server is greeted first ([`rpc::greet_rpc_server`]): an absent, busy or mismatched
/// server is an error here, where ggml would abort. The devices do not join ggml's global
/// registry (see the module's documentation).
pub fn add_rpc_server(_rt: &Runtime, endpoint: &RpcEndpoint) -> Result<Vec<Device>, RpcError> {
    static ADDED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let name = endpoint.to_string();
    let c_endpoint = CString::new(name.clone()).map_err(|_| RpcError::NoDevices { endpoint: endpoint.clone() })?;
    let mut added = ADDED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let first_time = !added.contains(&name);
    if first_time {
        rpc::greet_rpc_server(endpoint)?;
    }
    // SAFETY: a NUL-terminated "host:port" that ggml copies. The first time, the server answered
    // ggml's HELLO with a compatible version just now, which is what ggml's connection checks
    // (it aborts otherwise); later calls return ggml's cached entry without connecting. Null
    // when the server has no device.
    let reg = unsafe { rpc::ggml_backend_rpc_add_server(c_endpoint.as_ptr()) };
    if reg.is_null() {
        return Err(RpcError::NoDevices { endpoint: endpoint.clone() });
    }
    if first_time {
        added.push(name);
        super::abort::note_rpc_server(endpoint);
    }
    // SAFETY: a registry entry ggml made for this endpoint and never frees.
    let n = unsafe { sys::ggml_backend_reg_dev_count(reg) };
    // SAFETY: a live registry entry; 0 <= i < its device count.
    Ok((0..n).filter_map(|i| Device::from_raw(unsafe { sys::ggml_backend_reg_dev_get(reg, i) })).collect())
}

/// The device to compute on when none is named: the first GPU of ggml's registry (a discrete
/// one, else an integrated one), else the CPU. RPC servers' devices are never a default.
pub fn default_device(rt: &Runtime) -> Option<Device> {
    let all = Device::all(rt);
    [DeviceType::Gpu, DeviceType::Igpu, DeviceType::Cpu]
        .into_iter()
        .find_map(|kind| all.iter().find(|d| d.kind() == kind).copied())
}

/// The name of ggml's registry entry for a kind of local device, and the cargo feature of this
/// crate that compiles that backend in (none for the CPU, always compiled in, and RPC, always
/// built by build.rs).
fn backend_of(spec: &DeviceSpec) -> (&'static str, Option<&'static str>) {
    match spec {
        DeviceSpec::Cuda(_) => ("CUDA", Some("cuda")),
        DeviceSpec::Metal => ("MTL", Some("metal")),
        DeviceSpec::Vulkan(_) => ("Vulkan", Some("vulkan")),
        DeviceSpec::Cpu | DeviceSpec::Rpc(_) => ("CPU", None),
    }
}

/// The devices `list` names, in its order (an RPC server's devices in the server's order),
/// adding RPC servers to the registry.
pub fn resolve_devices(rt: &Runtime, list: &DeviceList) -> Result<Vec<Device>, DeviceError> {
    let mut devices = Vec::new();
    let mut seen = HashSet::new();
    for spec in list.specs() {
        for device in resolve_one(rt, spec)? {
            if seen.insert(device) {
                devices.push(device);
            }
        }
    }
    Ok(devices)
}

fn resolve_one(rt: &Runtime, spec: &DeviceSpec) -> Result<Vec<Device>, DeviceError> {
    let index = match spec {
        DeviceSpec::Rpc(endpoint) => return Ok(add_rpc_server(rt, endpoint)?),
        DeviceSpec::Cuda(i) | DeviceSpec::Vulkan(i) => *i as usize,
        DeviceSpec::Cpu | DeviceSpec::Metal => 0,
    };
    let (backend, feature) = backend_of(spec);
    let all = Device::all(rt);
    let c_backend = CString::new(backend).unwrap_or_default();
    // SAFETY: a NUL-terminated name; returns null when no such backend is registered.
    if unsafe { sys::ggml_backend_reg_by_name(c_backend.as_ptr()) }.is_null() {
        let available = all.iter().map(Device::name).collect();
        return Err(DeviceError::NotCompiledIn { spec: spec.clone(), backend, feature, available });
    }
    let of_backend: Vec<Device> = all.into_iter().filter(|d| d.backend_name() == backend).collect();
    of_backend.get(index).map(|d| vec![*d]).ok_or_else(|| DeviceError::NoSuchDevice {
        spec: spec.clone(),
        backend,
        available: of_backend.iter().map(Device::name).collect(),
    })
}

/// The devices a model runs on, in the order the layers go to them, and how the layers are
/// shared among them: contiguous runs, by free memory or by given proportions as llama.cpp's
/// `--tensor-split` does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Devices {
    /// The devices; empty means this machine's CPU.
    pub list: Vec<Device>,
    /// Each device's share of the layers (any positive numbers; `3,1` gives the first device
    /// three quarters); `None`: in proportion to each device's free memory.
    pub split: Option<Vec<f32>>,
}

impl Devices {
    /// This machine's CPU alone.
    pub fn cpu() -> Devices {
        Devices::default()
    }

    /// `device` alone.
    pub fn one(device: Device) -> Devices {
        Devices { list: vec![device], split: None }
    }

    /// Whether the model runs on this machine's CPU alone (the CPU's own fast path applies).
    pub fn is_cpu_only(&self) -> bool {
        self.list.iter().all(|d| d.kind() == DeviceType::Cpu)
    }

    /// Each device's share of the layers, normalised to sum to 1: the given proportions, else
    /// the devices' free memory (equal shares where none reports any).
    pub fn shares(&self) -> Result<Vec<f64>, Error> {
        let n = self.list.len().max(1);
        let weights: Vec<f64> = match &self.split {
            Some(split) => {
                if split.len() != n
                    || split.iter().any(|s| !s.is_finite() || *s < 0.0)
                    || split.iter().all(|s| *s == 0.0)
                {
                    return Err(Error::BadSplit { split: split.clone(), n_devices: n });
                }
                split.iter().map(|&s| f64::from(s)).collect()
            }
            None => {
                let free: Vec<f64> = self.list.iter().map(|d| d.memory().free as f64).collect();
                if free.is_empty() || free.iter().all(|&f| f == 0.0) {
                    vec![1.0; n]
                } else {
                    free
                }
            }
        };
        let total: f64 = weights.iter().sum();
        Ok(weights.iter().map(|w| w / total).collect())
    }

    /// The device of each of `n_layer` layers, as indices into [`Devices::list`]: contiguous
    /// runs in the list's order, device `i` taking the layers whose position `il / n_layer` falls
    /// in its share (llama.cpp's rule for `--tensor-split`).
    pub fn layer_devices(&self, n_layer: usize) -> Result<Vec<usize>, Error> {
        let shares = self.shares()?;
        let mut ends = Vec::with_capacity(shares.len());
        let mut sum = 0.0;
        for s in &shares {
            sum += s;
            ends.push(sum);
        }
        let last = shares.len().saturating_sub(1);
        Ok((0..n_layer)
            .map(|il| {
                let at = il as f64 / n_layer as f64;
                ends.iter().position(|&end| at < end).unwrap_or(last)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_split(n: usize, split: Option<Vec<f32>>) -> Devices {
        let cpu = Device::all(Runtime::get()).into_iter().find(|d| d.kind() == DeviceType::Cpu).expect("a CPU device");
        Devices { list: vec![cpu; n], split }
    }

    #[test]
    fn layers_go_in_contiguous_runs_by_share() {
        let d = with_split(3, Some(vec![1.0, 1.0, 2.0]));
        assert_eq!(d.layer_devices(8).unwrap(), vec![0, 0, 1, 1, 2, 2, 2, 2]);
        let d = with_split(2, Some(vec![3.0, 1.0]));
        assert_eq!(d.layer_devices(4).unwrap(), vec![0, 0, 0, 1]);
        // A zero share gets no layer.
        let d = with_split(3, Some(vec![1.0, 0.0, 1.0]));
        assert_eq!(d.layer_devices(4).unwrap(), vec![0, 0, 2, 2]);
    }

    #[test]
    fn bad_splits_are_refused() {
        for split in [vec![1.0], vec![1.0, -1.0], vec![0.0, 0.0], vec![f32::NAN, 1.0]] {
            let err = with_split(2, Some(split.clone())).layer_devices(4).unwrap_err();
            assert!(matches!(err, Error::BadSplit { .. }), "{split:?}: {err}");
        }
    }
}
