//! A plan on devices (`--device` beyond the CPU): the memory each device of the list holds, and
//! the host's, each against what that memory has free.
//!
//! Measured as the CPU plan is: the very session `finetune --device` builds
//! ([`crate::train::measure_session_on`]), its weights allocated on their devices but not
//! filled, ggml's scheduler sizing each backend's compute buffer without allocating it. The
//! weights each device holds are the file's tensor bytes of its layers, shared out by the one
//! rule the run follows ([`crate::model::holder`]).

use crate::ggml::{Device, DeviceType, Devices};
use crate::model::{lora_layout, weight_bytes, LoraConfig, Model, ModelError};
use crate::train::{measure_session_on, SessionMemory};

use super::{PlanError, RunShape, RUNTIME_OVERHEAD_BYTES};

/// What one memory holds during a run on devices: a device of the list, or the host (this
/// machine's memory: the CPU's share of the layers, the CPU backend's buffers, which hold every
/// micro-batch's inputs, and the host's own needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    /// ggml's name of the device (`RPC0`, `CUDA0`), or `host`.
    pub name: String,
    /// ggml's description of the device (an RPC device's endpoint; the host: the CPU's).
    pub description: String,
    /// Layers whose weights and LoRA tensors it holds (the output layer, on the last device,
    /// not counted).
    pub layers: usize,
    /// The stored weights it holds, in bytes: the file's tensors of its layers, and the tensors
    /// outside the layers on the last device. The host's are pages of the mapped file.
    pub weights_bytes: u64,
    /// LoRA tensors, their gradients and AdamW's moments of its layers (the buffers as
    /// allocated).
    pub lora_state_bytes: u64,
    /// Its part of the model graphs' compute buffers (activations, gradients, logits; the
    /// host's: also the inputs).
    pub compute_bytes: u64,
    /// Its part of the optimizer graphs' buffers.
    pub optimizer_bytes: u64,
    /// The host alone: its copy of the LoRA state (the resumable state) and the runtime
    /// ([`RUNTIME_OVERHEAD_BYTES`]); 0 for a device.
    pub host_bytes: u64,
    /// Memory it has for the run: a device's free memory as its backend reports it before the
    /// run, the host's limit (given, or the machine's); `None` when unknown.
    pub available_bytes: Option<u64>,
}

impl DeviceMemory {
    /// Everything it holds.
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.lora_state_bytes + self.compute_bytes + self.optimizer_bytes + self.host_bytes
    }

    /// Whether it all fits in the available memory (`None` when that is unknown).
    pub fn fits(&self) -> Option<bool> {
        self.available_bytes.map(|a| self.total_bytes() <= a)
    }

    /// Whether this is the host's row.
    pub fn is_host(&self) -> bool {
        self.name == HOST
    }
}

/// The name of the host's row.
pub const HOST: &str = "host";

/// The memory of a run on devices, one row per memory.
#[derive(Clone, Debug, PartialEq)]
pub struct DevicePlan {
    /// Each device of the list other than the CPU, in the list's order, then the host.
    pub memories: Vec<DeviceMemory>,
    /// Trainable LoRA parameters.
    pub lora_params: u64,
    /// ggml's buffers, backend by backend, as the plan sized them (or the run allocated them).
    pub session: SessionMemory,
}

impl DevicePlan {
    /// Whether every memory fits: `Some(false)` as soon as one does not, `None` when none is
    /// known not to fit but some are unknown.
    pub fn fits(&self) -> Option<bool> {
        let verdicts: Vec<Option<bool>> = self.memories.iter().map(DeviceMemory::fits).collect();
        if verdicts.contains(&Some(false)) {
            Some(false)
        } else if verdicts.iter().all(|v| *v == Some(true)) {
            Some(true)
        } else {
            None
        }
    }

    /// The memory that fits worst: the one most over its available memory, else the one with
    /// the least room left (among those whose memory is known; else the largest).
    pub fn tightest(&self) -> Option<&DeviceMemory> {
        let room = |m: &DeviceMemory| m.available_bytes.map(|a| a as i128 - m.total_bytes() as i128);
        self.memories
            .iter()
            .filter(|m| m.available_bytes.is_some())
            .min_by_key(|m| room(m))
            .or_else(|| self.memories.iter().max_by_key(|m| m.total_bytes()))
    }

    /// The rows of a run of `model` with LoRA `lora` on `devices` whose ggml buffers are
    /// `session` (planned by [`device_memory`], or as a finetune run allocated them), with no
    /// available memory known.
    pub fn from_session(
        model: &Model,
        lora: &LoraConfig,
        devices: &Devices,
        session: SessionMemory,
    ) -> Result<DevicePlan, PlanError> {
        let h = model.hparams();
        let n_layer = usize::try_from(h.n_layer).unwrap_or(0);
        let weights = weight_bytes(devices, &model.gguf()?, n_layer)?;
        let mut layers = vec![0usize; weights.len()];
        for i in devices.layer_devices(n_layer).map_err(ModelError::from)? {
            layers[i] += 1;
        }
        let lora_params: u64 = lora_layout(h, lora)?.iter().map(|s| lora.rank * (s.n_in + s.n_out)).sum();
        let cpu_name = |d: &Device| d.kind() == DeviceType::Cpu;
        // The scheduler's backends: the list's devices other than the CPU, in order, then the
        // CPU's, which serves every CPU entry of the list (the host's row).
        let mut on_backends = session.backends.iter().filter(|b| !b.is_cpu());
        let host_backend = session.backends.iter().find(|b| b.is_cpu());
        let mut memories = Vec::new();
        let mut host = DeviceMemory {
            name: HOST.into(),
            description: devices
                .list
                .iter()
                .find(|d| cpu_name(d))
                .copied()
                .or_else(|| host_backend.and_then(|b| b.device))
                .map_or_else(|| "this machine".into(), |d| d.description()),
            layers: 0,
            weights_bytes: 0,
            lora_state_bytes: host_backend.map_or(0, |b| b.param_bytes as u64),
            compute_bytes: host_backend.map_or(0, |b| b.compute_bytes as u64),
            optimizer_bytes: host_backend.map_or(0, |b| b.optimizer_bytes as u64),
            host_bytes: 3 * 4 * lora_params + session.work_bytes as u64 + RUNTIME_OVERHEAD_BYTES,
            available_bytes: None,
        };
        for (i, device) in devices.list.iter().enumerate() {
            if cpu_name(device) {
                host.layers += layers[i];
                host.weights_bytes += weights[i];
                continue;
            }
            let backend = on_backends.next();
            memories.push(DeviceMemory {
                name: device.name(),
                description: device.description(),
                layers: layers[i],
                weights_bytes: weights[i],
                lora_state_bytes: backend.map_or(0, |b| b.param_bytes as u64),
                compute_bytes: backend.map_or(0, |b| b.compute_bytes as u64),
                optimizer_bytes: backend.map_or(0, |b| b.optimizer_bytes as u64),
                host_bytes: 0,
                available_bytes: None,
            });
        }
        if devices.list.is_empty() {
            host.layers = layers[0];
            host.weights_bytes = weights[0];
        }
        memories.push(host);
        Ok(DevicePlan { memories, lora_params, session })
    }
}

/// Plans the memory of training LoRA `run` on `model` on `devices`: each device's against its
/// free memory (read before anything is allocated), the host's against `host_available`.
pub fn device_memory(
    model: &Model,
    run: &RunShape,
    devices: &Devices,
    host_available: Option<u64>,
) -> Result<DevicePlan, PlanError> {
    let free: Vec<u64> = devices.list.iter().filter(|d| d.kind() != DeviceType::Cpu).map(|d| d.memory().free).collect();
    let session = measure_session_on(devices, model, &run.lora, run.shape, run.activations, run.threads)?;
    let mut plan = DevicePlan::from_session(model, &run.lora, devices, session)?;
    for (memory, free) in plan.memories.iter_mut().zip(free) {
        memory.available_bytes = (free > 0).then_some(free);
    }
    if let Some(host) = plan.memories.last_mut() {
        host.available_bytes = host_available;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(name: &str, total: u64, available: Option<u64>) -> DeviceMemory {
        DeviceMemory {
            name: name.into(),
            description: String::new(),
            layers: 1,
            weights_bytes: total / 2,
            lora_state_bytes: total / 4,
            compute_bytes: total - total / 2 - total / 4,
            optimizer_bytes: 0,
            host_bytes: 0,
            available_bytes: available,
        }
    }

    fn plan(memories: Vec<DeviceMemory>) -> DevicePlan {
        DevicePlan { memories, lora_params: 0, session: SessionMemory::default() }
    }

    #[test]
    fn a_memory_fits_when_its_total_is_at_most_what_is_available() {
        assert_eq!(memory("RPC0", 1000, Some(1000)).fits(), Some(true));
        assert_eq!(memory("RPC0", 1001, Some(1000)).fits(), Some(false));
        assert_eq!(memory("RPC0", 1, None).fits(), None);
    }

    #[test]
    fn a_plan_fits_when_every_memory_does_and_names_the_tightest() {
        let all = plan(vec![memory("RPC0", 900, Some(1000)), memory(HOST, 500, Some(4000))]);
        assert_eq!(all.fits(), Some(true));
        assert_eq!(all.tightest().unwrap().name, "RPC0");
        // The host fits, the device does not: the run does not, and the device is the one to
        // relieve.
        let device_short = plan(vec![memory("RPC0", 1200, Some(1000)), memory(HOST, 500, Some(4000))]);
        assert_eq!(device_short.fits(), Some(false));
        assert_eq!(device_short.tightest().unwrap().name, "RPC0");
        // Two devices over: the one most over is named.
        let both =
            plan(vec![memory("RPC0", 1200, Some(1000)), memory("RPC1", 3000, Some(1000)), memory(HOST, 1, None)]);
        assert_eq!(both.fits(), Some(false));
        assert_eq!(both.tightest().unwrap().name, "RPC1");
        // Unknown memories: no verdict unless one is known not to fit.
        let unknown = plan(vec![memory("RPC0", 900, Some(1000)), memory(HOST, 500, None)]);
        assert_eq!(unknown.fits(), None);
        let none_known = plan(vec![memory("RPC0", 900, None), memory(HOST, 500, None)]);
        assert_eq!(none_known.tightest().unwrap().name, "RPC0");
    }
}
