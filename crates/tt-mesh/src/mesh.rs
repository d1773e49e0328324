//! The mesh: devices with memory ledgers, a topology, link counters and an execution policy.

use std::ops::Range;
use std::sync::Arc;

use tt_ops::Tensor;
use tt_shard::{DeviceProfile, MeshShape};

use crate::error::MeshError;
use crate::links::{LinkBytes, LinkCounters, RankTraffic};
use crate::memory::{Allocation, Ledger, MemoryStats};
use crate::topology::{Algorithm, Topology};
use crate::transport::Transport;

/// How a collective step's transfers are executed. The schedule and the result are the same
/// either way; only the host threads differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Every step's transfers run concurrently on the rayon pool.
    Parallel,
    /// Every step's transfers run one after another on the calling thread.
    Sequential,
    /// Parallel when a device's buffer holds at least this many elements, else sequential
    /// (a rayon join costs microseconds; a decode all_reduce of 3072 values is cheaper inline).
    Auto {
        /// Elements per device from which steps run in parallel.
        min_parallel_elems: usize,
    },
}

impl Default for Execution {
    /// `Auto` from 64Ki elements per device.
    fn default() -> Self {
        Execution::Auto {
            min_parallel_elems: 1 << 16,
        }
    }
}

impl Execution {
    /// Whether a collective over `elems` elements per device runs its steps in parallel.
    pub fn parallel_for(self, elems: usize) -> bool {
        match self {
            Execution::Parallel => true,
            Execution::Sequential => false,
            Execution::Auto { min_parallel_elems } => elems >= min_parallel_elems,
        }
    }
}

/// A mesh of simulated devices, numbered in row-major order.
///
/// One process hosts the whole mesh unless [`Mesh::with_transport`] spreads it over ranks:
/// then this process hosts only [`Mesh::local_devices`], and mesh tensors hold only those
/// devices' shards.
#[derive(Debug)]
pub struct Mesh {
    shape: MeshShape,
    profile: DeviceProfile,
    topology: Topology,
    execution: Execution,
    ledgers: Vec<Arc<Ledger>>,
    links: LinkCounters,
    local: Range<usize>,
    transport: Option<Arc<dyn Transport>>,
}

impl Mesh {
    /// A mesh of `shape` devices of `profile`, linked as `topology`.
    pub fn new(shape: MeshShape, profile: DeviceProfile, topology: Topology) -> Self {
        let n = shape.num_devices();
        Self {
            shape,
            ledgers: (0..n).map(|d| Arc::new(Ledger::new(d, &profile))).collect(),
            profile,
            topology,
            execution: Execution::default(),
            links: LinkCounters::new(n),
            local: 0..n,
            transport: None,
        }
    }

    /// The same mesh spread over the ranks of `transport`: rank `r` of `R` hosts the `r`-th of
    /// `R` equal contiguous blocks of devices (a 2x4 mesh on 2 ranks: devices 0-3 and 4-7, two
    /// 1x4 halves). The devices must split evenly. One rank is the whole mesh again.
    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Result<Self, MeshError> {
        let (n, ranks, rank) = (self.num_devices(), transport.ranks(), transport.rank());
        if ranks == 0 || n % ranks != 0 || rank >= ranks {
            return Err(MeshError::RankSplit { devices: n, ranks });
        }
        let per = n / ranks;
        self.local = rank * per..(rank + 1) * per;
        self.transport = (ranks > 1).then_some(transport);
        Ok(self)
    }

    /// The devices this process hosts (all of them unless the mesh spans ranks).
    pub fn local_devices(&self) -> Range<usize> {
        self.local.clone()
    }

    /// Whether this process hosts `device`.
    pub fn is_local(&self, device: usize) -> bool {
        self.local.contains(&device)
    }

    /// This process's rank (0 in a one-process mesh).
    pub fn rank(&self) -> usize {
        self.transport.as_ref().map_or(0, |t| t.rank())
    }

    /// Ranks hosting the mesh (1 in a one-process mesh).
    pub fn ranks(&self) -> usize {
        self.transport.as_ref().map_or(1, |t| t.ranks())
    }

    /// The rank hosting `device`.
    pub fn rank_of(&self, device: usize) -> usize {
        device / self.local.len().max(1)
    }

    /// The transport between ranks, when the mesh spans more than one.
    pub fn transport(&self) -> Option<&dyn Transport> {
        self.transport.as_deref()
    }

    /// The same mesh with another execution policy for collectives.
    pub fn with_execution(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// Mesh shape.
    pub fn shape(&self) -> MeshShape {
        self.shape
    }

    /// Devices in the mesh.
    pub fn num_devices(&self) -> usize {
        self.ledgers.len()
    }

    /// The devices' profile.
    pub fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// The links between devices.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The execution policy of collectives.
    pub fn execution(&self) -> Execution {
        self.execution
    }

    /// The algorithm collectives use by default (the topology's).
    pub fn default_algorithm(&self) -> Algorithm {
        self.topology.default_algorithm()
    }

    /// Reserve `bytes` on `device` (one this process hosts); released when the returned
    /// allocation drops.
    pub fn allocate(&self, device: usize, bytes: u64) -> Result<Allocation, MeshError> {
        self.check_local(device)?;
        Allocation::new(self.ledger(device)?, bytes)
    }

    /// Reserve the bytes `tensor` occupies on `device` (tile-padded under a tiled profile).
    pub fn allocate_tensor(&self, device: usize, tensor: &Tensor) -> Result<Allocation, MeshError> {
        self.check_local(device)?;
        let ledger = self.ledger(device)?;
        Allocation::new(ledger, ledger.tensor_bytes(tensor))
    }

    /// `Ok` when this process hosts `device`.
    pub(crate) fn check_local(&self, device: usize) -> Result<(), MeshError> {
        if device >= self.num_devices() {
            return Err(MeshError::DeviceOutOfRange {
                device,
                devices: self.num_devices(),
            });
        }
        if !self.is_local(device) {
            return Err(MeshError::NotLocal {
                device,
                first: self.local.start,
                end: self.local.end,
            });
        }
        Ok(())
    }

    /// Bytes `tensor` occupies on a device of this mesh.
    pub fn tensor_bytes(&self, tensor: &Tensor) -> u64 {
        self.ledgers
            .first()
            .map_or(tensor.size_bytes() as u64, |l| l.tensor_bytes(tensor))
    }

    /// Memory counters of `device`.
    pub fn memory(&self, device: usize) -> Result<MemoryStats, MeshError> {
        Ok(self.ledger(device)?.stats())
    }

    /// Bytes sent per directed link since the mesh was made (or last reset).
    pub fn link_bytes(&self) -> LinkBytes {
        self.links.snapshot()
    }

    /// Messages and bytes this process sent to other ranks since the mesh was made (or last
    /// reset). Link bytes count every transfer of the schedule on every rank, so they equal the
    /// one-process figures; this counts what actually left this process.
    pub fn rank_traffic(&self) -> RankTraffic {
        self.links.traffic()
    }

    /// Zero the link counters (and the rank traffic).
    pub fn reset_link_bytes(&self) {
        self.links.reset();
    }

    pub(crate) fn links(&self) -> &LinkCounters {
        &self.links
    }

    pub(crate) fn ledger(&self, device: usize) -> Result<&Arc<Ledger>, MeshError> {
        self.ledgers.get(device).ok_or(MeshError::DeviceOutOfRange {
            device,
            devices: self.num_devices(),
        })
    }

    /// Whether `alloc` was made on this mesh.
    pub(crate) fn owns(&self, alloc: &Allocation) -> bool {
        self.ledgers
            .get(alloc.device())
            .is_some_and(|l| Arc::ptr_eq(l, alloc.ledger()))
    }
}
