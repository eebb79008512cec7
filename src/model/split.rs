//! Where a model runs: which of the devices a user chose ([`Devices`]) holds each layer. The
//! layers go out in contiguous runs ([`Devices::layer_devices`]); the output layer (output norm
//! and projection, and the token embeddings) goes with the last device. Only activations and
//! their gradients cross from one device to the next.

use crate::ggml::{Backend, DeviceType, Devices, ParamBuffer, Runtime, Tensor};
use crate::gguf::Gguf;
use crate::names::TensorName;

use super::ModelError;

/// Which of `n_devices` devices holds a tensor of layer `layer`, given each layer's device
/// (`layer_devices`, as [`Devices::layer_devices`] says): its layer's, and the last device for
/// the tensors outside the layers (`None`: token embeddings, output norm and projection, rope
/// factors). The one rule that both [`LayerSplit`] (where the weights and LoRA tensors go) and
/// [`weight_bytes`] (what `plan` says each device holds) follow.
pub fn holder(layer_devices: &[usize], n_devices: usize, layer: Option<u32>) -> usize {
    let last = n_devices.saturating_sub(1);
    layer.and_then(|il| layer_devices.get(il as usize).copied()).unwrap_or(last)
}

/// The bytes of the stored weights each device of `devices` holds (one entry per device; one,
/// the CPU's, for an empty list) for the model indexed by `g` with `n_layer` layers: each tensor
/// of the file goes where [`holder`] says, by the layer of its name, as
/// [`super::Weights::place`] puts it.
pub fn weight_bytes(devices: &Devices, g: &Gguf<'_>, n_layer: usize) -> Result<Vec<u64>, ModelError> {
    let layer_devices = devices.layer_devices(n_layer)?;
    let n = devices.list.len().max(1);
    let mut bytes = vec![0u64; n];
    for t in &g.tensors {
        let layer = TensorName::from_gguf(t.name).and_then(|name| name.layer);
        bytes[holder(&layer_devices, n, layer)] += t.n_bytes;
    }
    Ok(bytes)
}

/// The backends of a [`Devices`] list: this machine's CPU backend (ggml's scheduler always ends
/// with one) and one of each other device.
#[derive(Debug)]
pub struct DeviceBackends {
    cpu: Backend,
    /// One per device of the list: `None` for a CPU device (the CPU backend serves it).
    devices: Vec<Option<Backend>>,
}

impl DeviceBackends {
    /// Starts a backend for each device of `devices` (the CPU's with `threads` threads).
    pub fn start(devices: &Devices, threads: usize) -> Result<DeviceBackends, ModelError> {
        let rt = Runtime::get();
        let cpu = Backend::cpu(rt, threads)?;
        let mut started = Vec::new();
        for d in &devices.list {
            started.push(match d.kind() {
                DeviceType::Cpu => None,
                _ => Some(Backend::from_device(rt, d, threads)?),
            });
        }
        Ok(DeviceBackends { cpu, devices: started })
    }

    /// This machine's CPU backend.
    pub fn cpu(&self) -> &Backend {
        &self.cpu
    }

    /// One backend per device, in the list's order (the CPU's for the CPU, and for an empty
    /// list): what a [`LayerSplit`] shares the layers among.
    pub fn per_device(&self) -> Vec<&Backend> {
        if self.devices.is_empty() {
            return vec![&self.cpu];
        }
        self.devices.iter().map(|b| b.as_ref().unwrap_or(&self.cpu)).collect()
    }

    /// The backends in the order ggml's scheduler takes them: each device's other than the CPU,
    /// then the CPU's.
    pub fn for_scheduler(&self) -> Vec<&Backend> {
        self.devices.iter().flatten().chain([&self.cpu]).collect()
    }
}

/// [`Devices`] resolved for one model: a backend per device and the one holding each layer.
#[derive(Clone, Debug)]
pub struct LayerSplit<'b> {
    /// One backend per device of [`Devices::list`] (the CPU's is this machine's CPU backend).
    pub backends: Vec<&'b Backend>,
    /// For each layer, its index in `backends`.
    pub layer_backend: Vec<usize>,
}

impl<'b> LayerSplit<'b> {
    /// The split of `n_layer` layers over `backends` (one per device of `devices`).
    pub fn new(devices: &Devices, backends: Vec<&'b Backend>, n_layer: usize) -> Result<LayerSplit<'b>, ModelError> {
        if backends.is_empty() || backends.len() != devices.list.len().max(1) {
            return Err(ModelError::Inconsistent {
                what: format!("{} backend(s) for {} device(s)", backends.len(), devices.list.len()),
            });
        }
        Ok(LayerSplit { layer_backend: devices.layer_devices(n_layer)?, backends })
    }

    /// Index in `backends` of the backend of the tensor of layer `layer` (`None`: outside the
    /// layers).
    pub fn backend_index(&self, layer: Option<u32>) -> usize {
        holder(&self.layer_backend, self.backends.len(), layer)
    }

    /// Whether backend `i` is a CPU backend (its share of the weights is the mapped file).
    pub fn is_cpu(&self, i: usize) -> bool {
        self.backends[i].device().is_some_and(|d| d.kind() == DeviceType::Cpu)
    }

    /// Gives `tensors` (each with the layer it belongs to; `None`: outside the layers) memory on
    /// their backends: one [`ParamBuffer`] per backend holding any, with that backend's index in
    /// `backends`. The LoRA tensors, their gradients and AdamW's moments live with their layer.
    pub fn place_params<'c>(
        &self,
        tensors: &[(Option<u32>, Tensor<'c>)],
    ) -> Result<Vec<(usize, ParamBuffer<'c>)>, ModelError> {
        let mut buffers = Vec::new();
        for (i, backend) in self.backends.iter().enumerate() {
            let share: Vec<Tensor<'c>> =
                tensors.iter().filter(|(layer, _)| self.backend_index(*layer) == i).map(|&(_, t)| t).collect();
            if !share.is_empty() {
                buffers.push((i, ParamBuffer::alloc_tensors(backend, &share)?));
            }
        }
        Ok(buffers)
    }
}
