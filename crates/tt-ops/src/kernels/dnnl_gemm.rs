//! `out = x @ w^T` on oneDNN's matmul primitive: bf16 activations and weights, f32 accumulation
//! and output, run on the CPU's matrix units (AMX, AVX-512 BF16) where it has them.
//!
//! The weights are read in place in their HF layout: `w [n, k]` row-major is oneDNN's `[k, n]`
//! weights matrix with strides `{1, k}` (no copy of ours; oneDNN repacks the panels it works on).
//! Rows further apart (`ldw > k`, a column view) are first copied together per block. The output
//! columns are split into fixed blocks of [`NB`] (the last one shorter); each block is one single-threaded oneDNN call into a dense scratch, copied into `out`,
//! and rayon spreads the blocks over the cores. So the work split, and with it every result, depends
//! only on the shape and never on the thread count (the tests also check that a column's value does
//! not depend on the block it falls in).
//!
//! Primitive creation is slow (a JIT compile): primitives are cached per block shape
//! `(m, k, nb)` (up to `CACHE_MAX` of them) and shared by all threads, each execution bringing
//! its own scratchpad (`dnnl_scratchpad_mode_user`), stream and memory objects.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::sync::{Arc, Mutex, OnceLock};

use half::bf16;
use rayon::prelude::*;

use super::dnnl::{
    ARG_DST, ARG_SCRATCHPAD, ARG_SRC, ARG_WEIGHTS, Api, DT_BF16, DT_F32, ENGINE_CPU, Engine,
    ExecArg, Md, Memory, OpDesc, PrimDesc, Primitive, QUERY_IMPL_INFO_STR, QUERY_SCRATCHPAD_MD,
    SCRATCHPAD_USER, STREAM_DEFAULT, Status, Stream,
};
use super::out::DisjointOut;
use super::scratch::with_scratch;

/// Output columns per oneDNN call (the last block of a row may be shorter).
pub(crate) const NB: usize = 256;

/// A failed oneDNN call: which one and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnnlError {
    /// The C function that failed, or what was missing.
    pub(crate) what: &'static str,
    /// Its `dnnl_status_t` (0 when the failure was not a status).
    pub(crate) status: Status,
}

impl std::fmt::Display for DnnlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed with oneDNN status {}", self.what, self.status)
    }
}

/// Turns a status into a result.
fn check(what: &'static str, status: Status) -> Result<(), DnnlError> {
    if status == 0 {
        Ok(())
    } else {
        Err(DnnlError { what, status })
    }
}

/// Shape of one cached primitive: `[m, k] @ [k, nb]` with weight rows `ldw` apart.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Key {
    m: usize,
    k: usize,
    nb: usize,
    ldw: usize,
}

/// Cached primitives at most; past it the cache starts afresh (a server seeing many prompt
/// lengths must not grow it without bound; executions in flight keep their primitive alive).
const CACHE_MAX: usize = 512;

/// A created primitive with the descriptors its executions need; destroyed when dropped.
struct Prim {
    api: &'static Api,
    prim: Primitive,
    src: Box<Md>,
    wei: Box<Md>,
    dst: Box<Md>,
    /// Owned by `pd`, which lives as long as this struct.
    scratch_md: *const Md,
    pd: PrimDesc,
    scratch_bytes: usize,
    /// oneDNN's name of the implementation it picked, e.g. `brg:avx512_core_amx_bf16`.
    impl_name: String,
}

impl Drop for Prim {
    fn drop(&mut self) {
        // SAFETY: both were created for this struct alone and nothing uses them after it.
        unsafe {
            (self.api.primitive_destroy)(self.prim);
            (self.api.primitive_desc_destroy)(self.pd);
        }
    }
}

// SAFETY: a oneDNN primitive and its descriptor are immutable after creation and documented as
// safe to execute from several threads at once; each execution here brings its own scratchpad,
// stream and memory objects, so executions share nothing mutable. The descriptor buffers are
// only read.
unsafe impl Send for Prim {}
// SAFETY: as above.
unsafe impl Sync for Prim {}

/// The engine and the primitive cache.
pub(crate) struct Ctx {
    api: &'static Api,
    engine: Engine,
    prims: Mutex<HashMap<Key, Arc<Prim>>>,
}

// SAFETY: a oneDNN CPU engine is immutable after creation and may be shared by threads (every
// stream and primitive created from it in parallel); the cache is behind a mutex.
unsafe impl Send for Ctx {}
// SAFETY: as above.
unsafe impl Sync for Ctx {}

impl Ctx {
    /// The process-wide context, created on first use; why oneDNN is unusable otherwise.
    pub(crate) fn get() -> Result<&'static Ctx, String> {
        static CTX: OnceLock<Result<Ctx, String>> = OnceLock::new();
        CTX.get_or_init(|| {
            let api = Api::get().map_err(str::to_owned)?;
            let mut engine: Engine = std::ptr::null_mut();
            // SAFETY: writes one engine handle to `engine`.
            check("dnnl_engine_create", unsafe {
                (api.engine_create)(&mut engine, ENGINE_CPU, 0)
            })
            .map_err(|e| e.to_string())?;
            Ok(Ctx {
                api,
                engine,
                prims: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// The loaded bindings.
    pub(crate) fn api(&self) -> &'static Api {
        self.api
    }

    /// The cached primitive for `key`, created on first use.
    fn prim(&self, key: Key) -> Result<Arc<Prim>, DnnlError> {
        let mut cache = self.prims.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(self.create(key)?);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&p));
        Ok(p)
    }

    /// A memory descriptor of a 2-D matrix.
    fn md(&self, dims: [usize; 2], dt: i32, strides: [usize; 2]) -> Result<Box<Md>, DnnlError> {
        let mut md = Md::boxed();
        let dims = dims.map(|d| d as i64);
        let strides = strides.map(|d| d as i64);
        // SAFETY: `md` is a buffer larger than dnnl_memory_desc_t; dims and strides hold 2 values.
        check("dnnl_memory_desc_init_by_strides", unsafe {
            (self.api.memory_desc_init_by_strides)(&mut *md, 2, dims.as_ptr(), dt, strides.as_ptr())
        })?;
        Ok(md)
    }

    /// Creates the primitive for `key` (single-threaded, user scratchpad).
    fn create(&self, key: Key) -> Result<Prim, DnnlError> {
        let api = self.api;
        api.single_thread();
        let Key { m, k, nb, ldw } = key;
        let src = self.md([m, k], DT_BF16, [k, 1])?;
        let wei = self.md([k, nb], DT_BF16, [1, ldw])?;
        let dst = self.md([m, nb], DT_F32, [nb, 1])?;
        let mut op = OpDesc::boxed();
        // SAFETY: `op` is a buffer larger than dnnl_matmul_desc_t; the three descriptors were
        // initialised above; a null bias descriptor means no bias.
        check("dnnl_matmul_desc_init", unsafe {
            (api.matmul_desc_init)(&mut *op, &*src, &*wei, std::ptr::null(), &*dst)
        })?;
        let mut attr = std::ptr::null_mut();
        // SAFETY: writes one attribute handle.
        check("dnnl_primitive_attr_create", unsafe {
            (api.primitive_attr_create)(&mut attr)
        })?;
        let mut pd: PrimDesc = std::ptr::null_mut();
        // SAFETY: `attr` is live; the op descriptor is initialised; the engine is live.
        let made = unsafe {
            check(
                "dnnl_primitive_attr_set_scratchpad_mode",
                (api.primitive_attr_set_scratchpad_mode)(attr, SCRATCHPAD_USER),
            )
            .and_then(|()| {
                check(
                    "dnnl_primitive_desc_create",
                    (api.primitive_desc_create)(
                        &mut pd,
                        &*op,
                        attr,
                        self.engine,
                        std::ptr::null_mut(),
                    ),
                )
            })
        };
        // SAFETY: the descriptor copied what it needs from the attribute.
        unsafe { (api.primitive_attr_destroy)(attr) };
        made?;
        let mut name: *const c_char = std::ptr::null();
        // SAFETY: the impl-info query writes one `const char *` owned by `pd`.
        let named = unsafe {
            (api.primitive_desc_query)(
                pd,
                QUERY_IMPL_INFO_STR,
                0,
                (&mut name as *mut *const c_char).cast::<c_void>(),
            )
        };
        let impl_name = if named == 0 && !name.is_null() {
            // SAFETY: a NUL-terminated string owned by `pd`, which outlives this copy.
            unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned()
        } else {
            String::from("unknown")
        };
        // SAFETY: `pd` is live; the returned descriptor is owned by it (null if none).
        let scratch_md = unsafe { (api.primitive_desc_query_md)(pd, QUERY_SCRATCHPAD_MD, 0) };
        let scratch_bytes = if scratch_md.is_null() {
            0
        } else {
            // SAFETY: a live memory descriptor.
            unsafe { (api.memory_desc_get_size)(scratch_md) }
        };
        let mut prim: Primitive = std::ptr::null_mut();
        // SAFETY: `pd` is live; writes one primitive handle.
        if let Err(e) = check("dnnl_primitive_create", unsafe {
            (api.primitive_create)(&mut prim, pd)
        }) {
            // SAFETY: `pd` is not used again.
            unsafe { (api.primitive_desc_destroy)(pd) };
            return Err(e);
        }
        Ok(Prim {
            api,
            prim,
            src,
            wei,
            dst,
            scratch_md,
            pd,
            scratch_bytes,
            impl_name,
        })
    }

    /// The implementation oneDNN picks for `[m, k] @ [k, nb]` (creating and caching it).
    pub(crate) fn impl_name(&self, m: usize, k: usize, nb: usize) -> Result<String, DnnlError> {
        Ok(self.prim(Key { m, k, nb, ldw: k })?.impl_name.clone())
    }

    /// Runs `prim` once on raw operands.
    ///
    /// # Safety
    /// `x` must point at `m*k` bf16, `w` at the `[k, nb]` weights of the key's strides and `dst`
    /// at `m*nb` writable f32, all live and not written by anyone else during the call.
    unsafe fn execute(
        &self,
        prim: &Prim,
        x: *const bf16,
        w: *const bf16,
        dst: *mut f32,
    ) -> Result<(), DnnlError> {
        // oneDNN's scratchpad from this thread's pool (64-byte aligned, reused across calls).
        with_scratch(prim.scratch_bytes.div_ceil(4), |scratch| {
            // SAFETY: forwarded from the caller; `scratch` holds scratch_bytes.
            unsafe { self.execute_with(prim, x, w, dst, scratch.as_mut_ptr().cast::<c_void>()) }
        })
    }

    /// [`Ctx::execute`] with a scratchpad of `prim.scratch_bytes` at `scratch_ptr`.
    ///
    /// # Safety
    /// As [`Ctx::execute`]; `scratch_ptr` points at `prim.scratch_bytes` writable bytes no one
    /// else uses during the call.
    unsafe fn execute_with(
        &self,
        prim: &Prim,
        x: *const bf16,
        w: *const bf16,
        dst: *mut f32,
        scratch_ptr: *mut c_void,
    ) -> Result<(), DnnlError> {
        let api = self.api;
        api.single_thread();
        let mut guards = Guards {
            api,
            mems: Vec::with_capacity(4),
            stream: std::ptr::null_mut(),
        };
        let mut args = Vec::with_capacity(4);
        // oneDNN never writes its source and weights: the const-to-mut casts only satisfy the
        // C signature of dnnl_memory_create, which takes `void *` for every handle.
        let mut operands = vec![
            (
                ARG_SRC,
                &*prim.src as *const Md,
                x.cast_mut().cast::<c_void>(),
            ),
            (ARG_WEIGHTS, &*prim.wei, w.cast_mut().cast::<c_void>()),
            (ARG_DST, &*prim.dst, dst.cast::<c_void>()),
        ];
        if prim.scratch_bytes > 0 {
            operands.push((ARG_SCRATCHPAD, prim.scratch_md, scratch_ptr));
        }
        for (arg, md, ptr) in operands {
            let mut mem: Memory = std::ptr::null_mut();
            // SAFETY: `md` is a live descriptor; `ptr` points at memory of its size (the caller's
            // promise, for the operands and the scratchpad alike).
            check("dnnl_memory_create", unsafe {
                (api.memory_create)(&mut mem, md, self.engine, ptr)
            })?;
            guards.mems.push(mem);
            args.push(ExecArg { arg, memory: mem });
        }
        // SAFETY: writes one stream handle of the live engine.
        check("dnnl_stream_create", unsafe {
            (api.stream_create)(&mut guards.stream, self.engine, STREAM_DEFAULT)
        })?;
        // SAFETY: primitive, stream and memory objects are live; args.len() entries.
        check("dnnl_primitive_execute", unsafe {
            (api.primitive_execute)(prim.prim, guards.stream, args.len() as i32, args.as_ptr())
        })?;
        // SAFETY: the stream is live.
        check("dnnl_stream_wait", unsafe {
            (api.stream_wait)(guards.stream)
        })?;
        drop(guards);
        Ok(())
    }
}

/// Memory objects and stream of one execution, destroyed on every exit path.
struct Guards {
    api: &'static Api,
    mems: Vec<Memory>,
    stream: Stream,
}

impl Drop for Guards {
    fn drop(&mut self) {
        for &m in &self.mems {
            // SAFETY: created by dnnl_memory_create and not used after this.
            unsafe { (self.api.memory_destroy)(m) };
        }
        if !self.stream.is_null() {
            // SAFETY: created by dnnl_stream_create; its work was waited for.
            unsafe { (self.api.stream_destroy)(self.stream) };
        }
    }
}

/// `out[m*n] = x[m*k] @ w^T` with `w [n, k]` bf16 rows `ldw` apart, on oneDNN.
///
/// # Panics
/// If the slice lengths do not match the shape (a caller bug).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    ctx: &Ctx,
    x: &[bf16],
    w: &[bf16],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), DnnlError> {
    assert!(
        m > 0
            && k > 0
            && n > 0
            && ldw >= k
            && x.len() == m * k
            && (n - 1) * ldw + k <= w.len()
            && out.len() == m * n,
        "dnnl matmul: slice lengths do not match m={m}, k={k}, n={n}, ldw={ldw}"
    );
    let blocks = n.div_ceil(NB);
    let out = DisjointOut::new(out);
    let run = |b: usize| -> Result<(), DnnlError> {
        let j0 = b * NB;
        let nb = NB.min(n - j0);
        // Weight rows further apart than k (a row-parallel shard read as a column view) are copied
        // together first: oneDNN 2.6 runs strided weights on its plain `gemm:jit`, not on the
        // AMX brgemm kernels. The copy also makes a view's results those of its copy, bit for bit.
        let prim = ctx.prim(Key { m, k, nb, ldw: k })?;
        let packed = if ldw == k { 0 } else { (nb * k).div_ceil(2) };
        with_scratch(m * nb + packed, |buf| {
            let (dst, wbuf) = buf.split_at_mut(m * nb);
            let wp: &[bf16] = if ldw == k {
                &w[j0 * k..(j0 + nb) * k]
            } else {
                let wc = &mut bytemuck::cast_slice_mut::<f32, bf16>(wbuf)[..nb * k];
                for (j, row) in wc.chunks_exact_mut(k).enumerate() {
                    let r = (j0 + j) * ldw;
                    row.copy_from_slice(&w[r..r + k]);
                }
                wc
            };
            // SAFETY: x holds m*k values, wp the nb*k weights of columns j0..j0+nb (rows k
            // apart, as the key says), dst m*nb f32.
            unsafe { ctx.execute(&prim, x.as_ptr(), wp.as_ptr(), dst.as_mut_ptr()) }?;
            for i in 0..m {
                // SAFETY: block b alone covers columns j0..j0+nb; each row is its own segment.
                let seg = unsafe { out.segment(i * n + j0, nb) };
                seg.copy_from_slice(&dst[i * nb..(i + 1) * nb]);
            }
            Ok(())
        })
    };
    if blocks == 1 {
        run(0)
    } else {
        (0..blocks).into_par_iter().try_for_each(run)
    }
}
