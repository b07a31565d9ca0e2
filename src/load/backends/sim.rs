//! A simulated CUDA device for tests: reports `cuda:N` with a chosen capacity, makes device
//! copies that take the host model's bytes, and records every move. It exercises the cache's
//! VRAM accounting, eviction, offload and reload exactly as a GPU backend would, on any
//! machine.

use std::sync::{Arc, Mutex, PoisonError};

use super::{DeviceBackend, DeviceModel, ExecDevice, Precision};
use crate::load::{AnyModel, LoadError};

/// One recorded move of a model between memories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The cache key moved.
    pub key: String,
    /// Where the bytes came from (`cpu` for the host copy or an offloaded copy).
    pub from: ExecDevice,
    /// Where they went.
    pub to: ExecDevice,
    /// Bytes moved.
    pub bytes: u64,
}

/// The simulated device. Device copies take `model.bytes()` whatever the precision (the
/// precision asked for is recorded in [`SimBackend::precisions`]).
#[derive(Debug)]
pub struct SimBackend {
    device: ExecDevice,
    capacity: u64,
    offload: bool,
    moves: Mutex<Vec<Move>>,
    precisions: Mutex<Vec<(String, Precision)>>,
}

impl SimBackend {
    /// CUDA device `index` with `capacity` bytes of memory; offloads to RAM.
    pub fn cuda(index: usize, capacity: u64) -> Self {
        Self {
            device: ExecDevice::Cuda(index),
            capacity,
            offload: true,
            moves: Mutex::new(Vec::new()),
            precisions: Mutex::new(Vec::new()),
        }
    }

    /// A device whose copies cannot be offloaded (they are dropped to make room).
    #[must_use]
    pub fn without_offload(mut self) -> Self {
        self.offload = false;
        self
    }

    /// Every move so far, in order.
    pub fn moves(&self) -> Vec<Move> {
        self.moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The precision of every device copy made, in order.
    pub fn precisions(&self) -> Vec<(String, Precision)> {
        self.precisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bytes moved in all.
    pub fn bytes_moved(&self) -> u64 {
        self.moves().iter().map(|m| m.bytes).sum()
    }

    fn record(&self, key: &str, from: ExecDevice, to: ExecDevice, bytes: u64) {
        self.moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Move {
                key: key.to_owned(),
                from,
                to,
                bytes,
            });
    }

    fn copy(bytes: u64, device: ExecDevice) -> DeviceModel {
        DeviceModel::Other {
            bytes,
            device,
            value: Arc::new(()),
        }
    }
}

impl DeviceBackend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn device(&self) -> ExecDevice {
        self.device
    }

    fn capacity(&self) -> Option<u64> {
        Some(self.capacity)
    }

    fn device_bytes(&self, model: &AnyModel, _: Precision) -> Result<u64, LoadError> {
        Ok(model.bytes())
    }

    fn to_device(
        &self,
        key: &str,
        model: &Arc<AnyModel>,
        precision: Precision,
    ) -> Result<DeviceModel, LoadError> {
        let bytes = model.bytes();
        self.precisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key.to_owned(), precision));
        self.record(key, ExecDevice::Cpu, self.device, bytes);
        Ok(Self::copy(bytes, self.device))
    }

    fn offload(&self, key: &str, copy: &DeviceModel) -> Result<Option<DeviceModel>, LoadError> {
        if !self.offload {
            return Ok(None);
        }
        let bytes = copy.device_bytes();
        self.record(key, self.device, ExecDevice::Cpu, bytes);
        Ok(Some(Self::copy(bytes, ExecDevice::Cpu)))
    }

    fn reload(&self, key: &str, copy: &DeviceModel) -> Result<DeviceModel, LoadError> {
        let bytes = copy.device_bytes();
        self.record(key, ExecDevice::Cpu, self.device, bytes);
        Ok(Self::copy(bytes, self.device))
    }
}
