//! Build script: with the `tt-metal` feature, compiles the cxx bridge and the C++ shim and links
//! `libtt_metal.so` from the unpacked ttnn wheel named by `TT_METAL_WHEEL_DIR` (the directory
//! holding `ttnn/`; `cargo xtask ttnn-wheel` prints it). Without the feature it does nothing.

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tt-metal")]
    oracle::build()?;
    Ok(())
}

#[cfg(feature = "tt-metal")]
mod oracle {
    use std::path::PathBuf;

    pub fn build() -> Result<(), String> {
        println!("cargo:rerun-if-env-changed=TT_METAL_WHEEL_DIR");
        println!("cargo:rerun-if-changed=src/ffi.rs");
        println!("cargo:rerun-if-changed=src/shim.cc");
        println!("cargo:rerun-if-changed=src/shim.h");
        let wheel = std::env::var_os("TT_METAL_WHEEL_DIR")
            .map(PathBuf::from)
            .ok_or(
                "the tt-metal feature needs TT_METAL_WHEEL_DIR = the unpacked ttnn 0.81.1 wheel \
             (run `cargo xtask ttnn-wheel` and export the path it prints)",
            )?;
        let lib = wheel.join("ttnn/build/lib");
        if !lib.join("libtt_metal.so").is_file() {
            return Err(format!(
                "{} has no libtt_metal.so: is TT_METAL_WHEEL_DIR the unpacked wheel?",
                lib.display()
            ));
        }
        cxx_build::bridge("src/ffi.rs")
            .file("src/shim.cc")
            .std("c++20")
            .compile("tt_metal_oracle_shim");
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=tt_metal");
        // The wheel's libraries find each other through their own RUNPATH ($ORIGIN); ours needs
        // one to find libtt_metal.so at run time without LD_LIBRARY_PATH.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!(
            "cargo:rustc-env=TT_METAL_ORACLE_RUNTIME_ROOT={}",
            wheel.join("ttnn").display()
        );
        Ok(())
    }
}
