//! With the `torch` feature, lets the binaries find libtorch at run time without
//! LD_LIBRARY_PATH: an rpath to `$LIBTORCH/lib` (the folder `scripts/setup-libtorch` prints).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    match std::env::var("LIBTORCH") {
        Ok(dir) if !dir.is_empty() => {
            let lib = std::path::Path::new(&dir).join("lib");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        }
        _ => println!(
            "cargo:warning=LIBTORCH is not set: binaries will need LD_LIBRARY_PATH to find libtorch (run scripts/setup-libtorch)"
        ),
    }
}
