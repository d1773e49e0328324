//! oneDNN's C API, loaded at run time: the few functions a matmul primitive needs.
//!
//! `libdnnl.so.2` (oneDNN 2.x, e.g. Debian's `libdnnl2`) is opened with `dlopen` on first use, so
//! building needs nothing and a machine without the library falls back to the native kernels.
//! Only the 2.x ABI is bound: its memory and operation descriptors are plain C structs filled in by
//! `dnnl_*_desc_init` calls, which we hold as opaque, over-sized buffers ([`Md`], [`OpDesc`]) and
//! only ever pass by pointer. oneDNN 3.x changed these to handles; it ships as `libdnnl.so.3`, so
//! it is never opened here, and [`Api::load`] also checks the reported major version.
//!
//! Threading: Debian builds oneDNN with OpenMP. Each primitive is created and executed with the
//! calling thread's OpenMP team size set to 1 ([`Api::single_thread`]), so oneDNN runs inline on
//! the caller's (rayon) thread: no second thread pool competes for the cores, and a primitive's
//! result does not depend on how many threads the process has.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

use libloading::Library;

/// A oneDNN status code (`dnnl_status_t`); 0 is success.
pub(crate) type Status = c_int;
/// `dnnl_engine_t`.
pub(crate) type Engine = *mut c_void;
/// `dnnl_stream_t`.
pub(crate) type Stream = *mut c_void;
/// `dnnl_memory_t`.
pub(crate) type Memory = *mut c_void;
/// `dnnl_primitive_desc_t`.
pub(crate) type PrimDesc = *mut c_void;
/// `dnnl_primitive_t`.
pub(crate) type Primitive = *mut c_void;
/// `dnnl_primitive_attr_t`.
pub(crate) type Attr = *mut c_void;

/// `dnnl_memory_desc_t` of oneDNN 2.x: 696 bytes, 8-byte aligned in 2.6 (checked with a C
/// program against the 2.6.3 headers); a 2.x minor release keeps the ABI. Over-sized here.
#[repr(C, align(64))]
pub(crate) struct Md(pub(crate) [u8; 1024]);

/// `dnnl_matmul_desc_t` of oneDNN 2.x: 2800 bytes, 8-byte aligned in 2.6. Over-sized here.
#[repr(C, align(64))]
pub(crate) struct OpDesc(pub(crate) [u8; 4096]);

impl Md {
    /// A zeroed buffer for `dnnl_memory_desc_init_*` to fill.
    pub(crate) fn boxed() -> Box<Md> {
        Box::new(Md([0; 1024]))
    }
}

impl OpDesc {
    /// A zeroed buffer for `dnnl_matmul_desc_init` to fill.
    pub(crate) fn boxed() -> Box<OpDesc> {
        Box::new(OpDesc([0; 4096]))
    }
}

/// `dnnl_exec_arg_t`: an argument index (`DNNL_ARG_*`) and its memory object.
#[repr(C)]
pub(crate) struct ExecArg {
    pub(crate) arg: c_int,
    pub(crate) memory: Memory,
}

/// `dnnl_version_t`.
#[repr(C)]
pub(crate) struct Version {
    pub(crate) major: c_int,
    pub(crate) minor: c_int,
    pub(crate) patch: c_int,
    pub(crate) hash: *const c_char,
    pub(crate) cpu_runtime: c_uint,
    pub(crate) gpu_runtime: c_uint,
}

/// `dnnl_f32`.
pub(crate) const DT_F32: c_int = 3;
/// `dnnl_bf16`.
pub(crate) const DT_BF16: c_int = 2;
/// `dnnl_cpu` (engine kind).
pub(crate) const ENGINE_CPU: c_int = 1;
/// `dnnl_stream_default_flags`.
pub(crate) const STREAM_DEFAULT: c_uint = 1;
/// `dnnl_scratchpad_mode_user`: the caller passes the scratch memory to each execution.
pub(crate) const SCRATCHPAD_USER: c_int = 1;
/// `dnnl_query_impl_info_str`.
pub(crate) const QUERY_IMPL_INFO_STR: c_int = 8;
/// `dnnl_query_scratchpad_md`.
pub(crate) const QUERY_SCRATCHPAD_MD: c_int = 136;
/// `DNNL_ARG_SRC`.
pub(crate) const ARG_SRC: c_int = 1;
/// `DNNL_ARG_WEIGHTS`.
pub(crate) const ARG_WEIGHTS: c_int = 33;
/// `DNNL_ARG_DST`.
pub(crate) const ARG_DST: c_int = 17;
/// `DNNL_ARG_SCRATCHPAD`.
pub(crate) const ARG_SCRATCHPAD: c_int = 80;
/// `DNNL_RUNTIME_SEQ`: no threading of its own.
const RUNTIME_SEQ: c_uint = 1;
/// `DNNL_RUNTIME_OMP`.
const RUNTIME_OMP: c_uint = 2;
/// The bits of `dnnl_cpu_isa_avx512_core_bf16` (0xe7); `avx512_core_amx` (0x3e7) contains them.
pub(crate) const ISA_AVX512_CORE_BF16: c_int = 0xe7;
/// `dnnl_cpu_isa_avx512_core_amx`.
pub(crate) const ISA_AVX512_CORE_AMX: c_int = 0x3e7;

/// The library's entry points, each copied out of the loaded library.
///
/// Every field is a function pointer of the C signature in oneDNN 2.x's `dnnl.h` (and OpenMP's
/// `omp.h` for `omp_set_num_threads`); they stay valid because the [`Library`] they came from is
/// kept in the same struct, which lives in a process-wide static and is never dropped.
#[allow(clippy::type_complexity)]
pub(crate) struct Api {
    _lib: Library,
    pub(crate) engine_create: unsafe extern "C" fn(*mut Engine, c_int, usize) -> Status,
    pub(crate) stream_create: unsafe extern "C" fn(*mut Stream, Engine, c_uint) -> Status,
    pub(crate) stream_destroy: unsafe extern "C" fn(Stream) -> Status,
    pub(crate) stream_wait: unsafe extern "C" fn(Stream) -> Status,
    pub(crate) memory_desc_init_by_strides:
        unsafe extern "C" fn(*mut Md, c_int, *const i64, c_int, *const i64) -> Status,
    pub(crate) memory_desc_get_size: unsafe extern "C" fn(*const Md) -> usize,
    pub(crate) matmul_desc_init:
        unsafe extern "C" fn(*mut OpDesc, *const Md, *const Md, *const Md, *const Md) -> Status,
    pub(crate) primitive_attr_create: unsafe extern "C" fn(*mut Attr) -> Status,
    pub(crate) primitive_attr_destroy: unsafe extern "C" fn(Attr) -> Status,
    pub(crate) primitive_attr_set_scratchpad_mode: unsafe extern "C" fn(Attr, c_int) -> Status,
    pub(crate) primitive_desc_create:
        unsafe extern "C" fn(*mut PrimDesc, *const OpDesc, Attr, Engine, PrimDesc) -> Status,
    pub(crate) primitive_desc_destroy: unsafe extern "C" fn(PrimDesc) -> Status,
    pub(crate) primitive_desc_query:
        unsafe extern "C" fn(PrimDesc, c_int, c_int, *mut c_void) -> Status,
    pub(crate) primitive_desc_query_md: unsafe extern "C" fn(PrimDesc, c_int, c_int) -> *const Md,
    pub(crate) primitive_create: unsafe extern "C" fn(*mut Primitive, PrimDesc) -> Status,
    pub(crate) primitive_destroy: unsafe extern "C" fn(Primitive) -> Status,
    pub(crate) primitive_execute:
        unsafe extern "C" fn(Primitive, Stream, c_int, *const ExecArg) -> Status,
    pub(crate) memory_create:
        unsafe extern "C" fn(*mut Memory, *const Md, Engine, *mut c_void) -> Status,
    pub(crate) memory_destroy: unsafe extern "C" fn(Memory) -> Status,
    get_effective_cpu_isa: unsafe extern "C" fn() -> c_int,
    omp_set_num_threads: Option<unsafe extern "C" fn(c_int)>,
    /// `major.minor.patch` of the loaded library.
    pub(crate) version: (i32, i32, i32),
}

/// Copies the function pointer `name` out of `lib`.
///
/// # Safety
/// `T` must be the `extern "C" fn` type of the symbol's C declaration.
unsafe fn sym<T: Copy>(lib: &Library, name: &str) -> Result<T, String> {
    // SAFETY: the caller names the symbol's true type; the pointer is copied out and used only
    // while `lib` stays loaded (see `Api`).
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| format!("libdnnl.so.2 lacks {name}: {e}"))
}

impl Api {
    /// Opens `libdnnl.so.2` and binds the entry points; the reason as text when it cannot.
    fn load() -> Result<Api, String> {
        // SAFETY: loading runs the library's initialisers; libdnnl's only set up its own state
        // (and pull in libgomp, libstdc++), with no requirement on the calling program.
        let lib = unsafe { Library::new("libdnnl.so.2") }
            .map_err(|e| format!("oneDNN not loaded: {e}"))?;
        // SAFETY: each type below is transcribed from oneDNN 2.6's dnnl.h (pointers to structs as
        // pointers to our opaque buffers, enums as c_int, dnnl_dim_t as i64, size_t as usize).
        unsafe {
            let version: unsafe extern "C" fn() -> *const Version = sym(&lib, "dnnl_version")?;
            let v = version();
            if v.is_null() {
                return Err("dnnl_version returned null".into());
            }
            // SAFETY: dnnl_version returns a pointer to a static struct of this layout.
            let v = &*v;
            if v.major != 2 {
                return Err(format!(
                    "oneDNN {}.{} is not the 2.x ABI bound here",
                    v.major, v.minor
                ));
            }
            let omp_set_num_threads = match v.cpu_runtime {
                RUNTIME_SEQ => None,
                RUNTIME_OMP => Some(sym(&lib, "omp_set_num_threads")?),
                other => {
                    return Err(format!(
                        "oneDNN's CPU runtime {other:#x} cannot be kept to one thread per call"
                    ));
                }
            };
            Ok(Api {
                engine_create: sym(&lib, "dnnl_engine_create")?,
                stream_create: sym(&lib, "dnnl_stream_create")?,
                stream_destroy: sym(&lib, "dnnl_stream_destroy")?,
                stream_wait: sym(&lib, "dnnl_stream_wait")?,
                memory_desc_init_by_strides: sym(&lib, "dnnl_memory_desc_init_by_strides")?,
                memory_desc_get_size: sym(&lib, "dnnl_memory_desc_get_size")?,
                matmul_desc_init: sym(&lib, "dnnl_matmul_desc_init")?,
                primitive_attr_create: sym(&lib, "dnnl_primitive_attr_create")?,
                primitive_attr_destroy: sym(&lib, "dnnl_primitive_attr_destroy")?,
                primitive_attr_set_scratchpad_mode: sym(
                    &lib,
                    "dnnl_primitive_attr_set_scratchpad_mode",
                )?,
                primitive_desc_create: sym(&lib, "dnnl_primitive_desc_create")?,
                primitive_desc_destroy: sym(&lib, "dnnl_primitive_desc_destroy")?,
                primitive_desc_query: sym(&lib, "dnnl_primitive_desc_query")?,
                primitive_desc_query_md: sym(&lib, "dnnl_primitive_desc_query_md")?,
                primitive_create: sym(&lib, "dnnl_primitive_create")?,
                primitive_destroy: sym(&lib, "dnnl_primitive_destroy")?,
                primitive_execute: sym(&lib, "dnnl_primitive_execute")?,
                memory_create: sym(&lib, "dnnl_memory_create")?,
                memory_destroy: sym(&lib, "dnnl_memory_destroy")?,
                get_effective_cpu_isa: sym(&lib, "dnnl_get_effective_cpu_isa")?,
                omp_set_num_threads,
                version: (v.major, v.minor, v.patch),
                _lib: lib,
            })
        }
    }

    /// The process-wide bindings, loaded on first call; the reason when oneDNN is unusable.
    pub(crate) fn get() -> Result<&'static Api, &'static str> {
        static API: OnceLock<Result<Api, String>> = OnceLock::new();
        API.get_or_init(Api::load).as_ref().map_err(String::as_str)
    }

    /// The widest instruction set oneDNN dispatches to on this CPU (`dnnl_cpu_isa_t`).
    pub(crate) fn effective_isa(&self) -> c_int {
        // SAFETY: a pure query without arguments.
        unsafe { (self.get_effective_cpu_isa)() }
    }

    /// Makes oneDNN calls from this thread run on this thread alone (OpenMP team size 1 for the
    /// calling thread; a no-op for a sequential build).
    pub(crate) fn single_thread(&self) {
        if let Some(f) = self.omp_set_num_threads {
            // SAFETY: sets an OpenMP control variable of the calling thread only.
            unsafe { f(1) }
        }
    }
}

/// oneDNN's name of an instruction set value (`dnnl_cpu_isa_t`).
pub(crate) fn isa_name(isa: c_int) -> &'static str {
    match isa {
        ISA_AVX512_CORE_AMX => "avx512_core_amx",
        ISA_AVX512_CORE_BF16 => "avx512_core_bf16",
        0x67 => "avx512_core_vnni",
        0x27 => "avx512_core",
        0x407 => "avx2_vnni",
        0x7 => "avx2",
        0x3 => "avx",
        0x1 => "sse41",
        _ => "other",
    }
}
