//! Records the triple this crate is compiled for, so `floe-preset` can tell a
//! native build (no linker or emulator needed) from a cross build.

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rustc-env=FLOE_HOST_TRIPLE={target}");
}
