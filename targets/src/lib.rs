//! floe-targets: the boards floe builds for, as named presets.
//!
//! A preset fixes the Rust target triple, the CPU features the kernels may assume
//! and the kernel family whose packed weight layout `floe convert --target` writes.
//! Cross-build scripts and per-target layouts attach here as they land.

use std::fmt;

/// The kernel family a preset runs (one micro-kernel set in floe-kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// Portable Rust, any CPU.
    Generic,
    /// x86_64 with AVX2 and FMA.
    Avx2Fma,
    /// x86_64 with AVX-512F.
    Avx512,
    /// aarch64 Advanced SIMD.
    NeonAarch64,
    /// 32-bit ARM with NEON (Cortex-A7/A53 in 32-bit mode).
    NeonArmv7,
}

impl fmt::Display for KernelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelFamily::Generic => "generic",
            KernelFamily::Avx2Fma => "avx2+fma",
            KernelFamily::Avx512 => "avx512f",
            KernelFamily::NeonAarch64 => "neon-aarch64",
            KernelFamily::NeonArmv7 => "neon-armv7",
        })
    }
}

/// A named build and kernel configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub triple: &'static str,
    pub kernels: KernelFamily,
    /// `-C target-cpu` / `target-feature` flags the cross build uses.
    pub rustflags: &'static str,
    pub description: &'static str,
}

/// Every preset, in the order `floe targets` lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "generic",
        triple: "",
        kernels: KernelFamily::Generic,
        rustflags: "",
        description: "the host's triple, portable kernels (features detected at run time)",
    },
    Preset {
        name: "x86_64-avx2",
        triple: "x86_64-unknown-linux-gnu",
        kernels: KernelFamily::Avx2Fma,
        rustflags: "-C target-feature=+avx2,+fma",
        description: "x86_64 laptops and servers since Haswell",
    },
    Preset {
        name: "x86_64-avx512",
        triple: "x86_64-unknown-linux-gnu",
        kernels: KernelFamily::Avx512,
        rustflags: "-C target-feature=+avx512f,+avx2,+fma",
        description: "x86_64 servers with AVX-512 (Skylake-SP and later)",
    },
    Preset {
        name: "rpi3-armv7",
        triple: "armv7-unknown-linux-gnueabihf",
        kernels: KernelFamily::NeonArmv7,
        rustflags: "-C target-cpu=cortex-a53 -C target-feature=+neon",
        description: "Raspberry Pi 2 v1.2 / 3 running a 32-bit OS",
    },
    Preset {
        name: "rpi4-aarch64",
        triple: "aarch64-unknown-linux-gnu",
        kernels: KernelFamily::NeonAarch64,
        rustflags: "-C target-cpu=cortex-a72",
        description: "Raspberry Pi 4 / 400 / CM4, 64-bit OS",
    },
    Preset {
        name: "rpi5-aarch64",
        triple: "aarch64-unknown-linux-gnu",
        kernels: KernelFamily::NeonAarch64,
        rustflags: "-C target-cpu=cortex-a76",
        description: "Raspberry Pi 5, 64-bit OS (dot-product instructions available)",
    },
];

/// Looks a preset up by name; the error lists the valid names.
pub fn preset(name: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        format!("unknown target '{name}' (known: {})", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_names_are_unique_and_lookup_reports_known_names() {
        for (i, p) in PRESETS.iter().enumerate() {
            assert!(PRESETS[i + 1..].iter().all(|q| q.name != p.name), "{} twice", p.name);
        }
        assert_eq!(preset("rpi4-aarch64").unwrap().triple, "aarch64-unknown-linux-gnu");
        let err = preset("rpi9").unwrap_err();
        assert!(err.contains("rpi9") && err.contains("rpi5-aarch64"));
    }
}
