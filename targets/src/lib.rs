//! floe-targets: the boards floe builds for, as named presets.
//!
//! A preset fixes the Rust target triple, the CPU features the kernels may assume,
//! the kernel family whose weight layout `floe convert --target` records, and the
//! CPU qemu-user emulates when the preset's tests run on another machine. This is
//! the one place that data lives: `targets/cross.sh` reads it through the
//! `floe-preset` binary of this crate (`cargo run -p floe-targets --bin floe-preset
//! -- NAME`), and `floe` reads it to check a `.floe` file against the running CPU.

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
    /// Rust target triple; empty for "the host's".
    pub triple: &'static str,
    /// `std::env::consts::ARCH` of machines that run it; empty for any.
    pub arch: &'static str,
    pub kernels: KernelFamily,
    /// CPU features (std's detection names) the kernels and the build assume.
    pub features: &'static [&'static str],
    /// `-C target-cpu` / `target-feature` / `--cfg` flags the cross build uses.
    pub rustflags: &'static str,
    /// `-cpu` value for qemu-user when the preset's binaries run under emulation
    /// (empty: run natively).
    pub qemu_cpu: &'static str,
    pub description: &'static str,
}

/// Every preset, in the order `floe targets` lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "generic",
        triple: "",
        arch: "",
        kernels: KernelFamily::Generic,
        features: &[],
        rustflags: "",
        qemu_cpu: "",
        description: "the host's triple, portable kernels (features detected at run time)",
    },
    Preset {
        name: "x86_64-avx2",
        triple: "x86_64-unknown-linux-gnu",
        arch: "x86_64",
        kernels: KernelFamily::Avx2Fma,
        features: &["avx2", "fma"],
        rustflags: "-C target-feature=+avx2,+fma",
        qemu_cpu: "",
        description: "x86_64 laptops and servers since Haswell",
    },
    Preset {
        name: "x86_64-avx512",
        triple: "x86_64-unknown-linux-gnu",
        arch: "x86_64",
        kernels: KernelFamily::Avx512,
        features: &["avx512f", "avx2", "fma"],
        rustflags: "-C target-feature=+avx512f,+avx2,+fma",
        qemu_cpu: "",
        description: "x86_64 servers with AVX-512 (Skylake-SP and later)",
    },
    Preset {
        name: "rpi3-armv7",
        triple: "armv7-unknown-linux-gnueabihf",
        arch: "arm",
        kernels: KernelFamily::NeonArmv7,
        features: &["neon"],
        // `cfg(target_feature = "neon")` stays false on stable armv7 even with
        // +neon, so the hand-written NEON kernels are gated on `floe_neon`.
        rustflags: "-C target-cpu=cortex-a53 -C target-feature=+neon --cfg floe_neon",
        // qemu-arm has no Cortex-A53 model; "max" is an ARMv8 core in AArch32
        // state, which executes what rustc emits for `target-cpu=cortex-a53`.
        qemu_cpu: "max",
        description: "Raspberry Pi 2 v1.2 / 3 running a 32-bit OS",
    },
    Preset {
        name: "rpi4-aarch64",
        triple: "aarch64-unknown-linux-gnu",
        arch: "aarch64",
        kernels: KernelFamily::NeonAarch64,
        features: &["neon"],
        rustflags: "-C target-cpu=cortex-a72",
        qemu_cpu: "cortex-a72",
        description: "Raspberry Pi 4 / 400 / CM4, 64-bit OS",
    },
    Preset {
        name: "rpi5-aarch64",
        triple: "aarch64-unknown-linux-gnu",
        arch: "aarch64",
        kernels: KernelFamily::NeonAarch64,
        features: &["neon", "dotprod", "fp16"],
        rustflags: "-C target-cpu=cortex-a76",
        qemu_cpu: "cortex-a76",
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

/// What cross-building and emulating a triple takes on an x86_64 Debian machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossToolchain {
    /// C compiler cargo links with.
    pub linker: &'static str,
    /// Matching `ar` (for crates that build C code).
    pub ar: &'static str,
    /// `strip` that understands the binaries.
    pub strip: &'static str,
    /// qemu-user program (without the `-static` suffix Debian's static build adds).
    pub qemu: &'static str,
    /// The cross sysroot qemu-user loads the dynamic linker and libc from (`-L`).
    pub sysroot: &'static str,
    /// Debian packages providing the linker and the target's libc.
    pub debian_packages: &'static [&'static str],
}

/// The cross toolchain for `triple`, or `None` when it builds natively here.
pub fn cross_toolchain(triple: &str) -> Option<CrossToolchain> {
    match triple {
        "aarch64-unknown-linux-gnu" => Some(CrossToolchain {
            linker: "aarch64-linux-gnu-gcc",
            ar: "aarch64-linux-gnu-ar",
            strip: "aarch64-linux-gnu-strip",
            qemu: "qemu-aarch64",
            sysroot: "/usr/aarch64-linux-gnu",
            debian_packages: &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
        }),
        "armv7-unknown-linux-gnueabihf" => Some(CrossToolchain {
            linker: "arm-linux-gnueabihf-gcc",
            ar: "arm-linux-gnueabihf-ar",
            strip: "arm-linux-gnueabihf-strip",
            qemu: "qemu-arm",
            sysroot: "/usr/arm-linux-gnueabihf",
            debian_packages: &["gcc-arm-linux-gnueabihf", "libc6-dev-armhf-cross"],
        }),
        _ => None,
    }
}

/// Quotes `s` for a POSIX shell (single quotes, `'` escaped).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Preset {
    /// The preset as `KEY='value'` shell assignments (for `eval` in targets/cross.sh):
    /// FLOE_PRESET, FLOE_TRIPLE, FLOE_ARCH, FLOE_KERNELS, FLOE_FEATURES,
    /// FLOE_RUSTFLAGS, FLOE_QEMU_CPU, and when cross-building from `host_triple`
    /// FLOE_LINKER, FLOE_AR, FLOE_STRIP, FLOE_QEMU, FLOE_SYSROOT, FLOE_DEB_PACKAGES.
    pub fn shell_env(&self, host_triple: &str) -> String {
        let triple = if self.triple.is_empty() { host_triple } else { self.triple };
        let mut vars: Vec<(&str, String)> = vec![
            ("FLOE_PRESET", self.name.into()),
            ("FLOE_TRIPLE", triple.into()),
            ("FLOE_ARCH", self.arch.into()),
            ("FLOE_KERNELS", self.kernels.to_string()),
            ("FLOE_FEATURES", self.features.join(" ")),
            ("FLOE_RUSTFLAGS", self.rustflags.into()),
            ("FLOE_QEMU_CPU", self.qemu_cpu.into()),
        ];
        let cross = if triple == host_triple { None } else { cross_toolchain(triple) };
        let tc = |f: fn(&CrossToolchain) -> String| cross.as_ref().map(f).unwrap_or_default();
        vars.push(("FLOE_LINKER", tc(|t| t.linker.into())));
        vars.push(("FLOE_AR", tc(|t| t.ar.into())));
        vars.push(("FLOE_STRIP", tc(|t| t.strip.into())));
        vars.push(("FLOE_QEMU", tc(|t| t.qemu.into())));
        vars.push(("FLOE_SYSROOT", tc(|t| t.sysroot.into())));
        vars.push(("FLOE_DEB_PACKAGES", tc(|t| t.debian_packages.join(" "))));
        vars.iter().map(|(k, v)| format!("{k}={}\n", shell_quote(v))).collect()
    }

    /// `Ok` if the running CPU can execute this preset's kernels; otherwise what it lacks.
    pub fn check_host(&self) -> Result<(), String> {
        check_host(self.arch, self.features.iter().copied())
    }
}

/// `Ok` if this machine is `arch` (empty: any) with every feature in `features`;
/// otherwise a sentence saying what differs ("this CPU is x86_64", "this CPU lacks
/// avx512f"). Used for presets and for the requirements a `.floe` file records.
pub fn check_host<'a>(arch: &str, features: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    if !arch.is_empty() && arch != std::env::consts::ARCH {
        return Err(format!("this CPU is {}, not {arch}", std::env::consts::ARCH));
    }
    let missing: Vec<&str> = features.into_iter().filter(|f| !host_has(f)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("this CPU lacks {}", missing.join(", ")))
    }
}

/// The most specific preset the running CPU satisfies (the generic one if none):
/// what a `.floe` file converted on and for this machine would say.
pub fn host_preset() -> &'static Preset {
    PRESETS
        .iter()
        .filter(|p| !p.arch.is_empty() && p.check_host().is_ok())
        .max_by_key(|p| p.features.len())
        .unwrap_or(&PRESETS[0])
}

/// Whether the running CPU has `feature` (std's detection names; unknown names: no).
pub fn host_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            _ => false,
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        match feature {
            "neon" => std::arch::is_aarch64_feature_detected!("neon"),
            "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
            "fp16" => std::arch::is_aarch64_feature_detected!("fp16"),
            _ => false,
        }
    }
    #[cfg(target_arch = "arm")]
    {
        // `is_arm_feature_detected!` is unstable; read the kernel's HWCAP instead.
        feature == "neon" && arm_hwcap() & HWCAP_NEON != 0
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
    {
        let _ = feature;
        false
    }
}

#[cfg(target_arch = "arm")]
const HWCAP_NEON: u32 = 1 << 12;

/// AT_HWCAP from /proc/self/auxv (pairs of native words; 0 if unreadable).
#[cfg(target_arch = "arm")]
fn arm_hwcap() -> u32 {
    const AT_HWCAP: u32 = 16;
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(8)
        .map(|e| (u32::from_ne_bytes([e[0], e[1], e[2], e[3]]), u32::from_ne_bytes([e[4], e[5], e[6], e[7]])))
        .find(|&(k, _)| k == AT_HWCAP)
        .map_or(0, |(_, v)| v)
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

    #[test]
    fn every_cross_preset_has_a_toolchain_and_an_emulated_cpu() {
        for p in PRESETS.iter().filter(|p| p.arch == "aarch64" || p.arch == "arm") {
            let tc = cross_toolchain(p.triple).unwrap_or_else(|| panic!("{}: no cross toolchain", p.name));
            assert!(!p.qemu_cpu.is_empty(), "{}: no qemu cpu", p.name);
            assert!(tc.linker.ends_with("-gcc") && tc.sysroot.starts_with("/usr/"), "{}", p.name);
            // The triple's architecture is the one the preset says its machines are.
            assert!(p.triple.starts_with(if p.arch == "arm" { "armv7" } else { p.arch }), "{}", p.name);
        }
        // armv7's NEON kernels exist only with the project cfg (stable rustc keeps
        // cfg(target_feature = "neon") false there).
        assert!(preset("rpi3-armv7").unwrap().rustflags.contains("--cfg floe_neon"));
    }

    #[test]
    fn shell_env_quotes_values_and_names_the_cross_tools() {
        let env = preset("rpi3-armv7").unwrap().shell_env("x86_64-unknown-linux-gnu");
        assert!(env.contains("FLOE_TRIPLE='armv7-unknown-linux-gnueabihf'\n"), "{env}");
        assert!(env.contains("FLOE_RUSTFLAGS='-C target-cpu=cortex-a53 -C target-feature=+neon --cfg floe_neon'\n"));
        assert!(env.contains("FLOE_QEMU='qemu-arm'\n") && env.contains("FLOE_SYSROOT='/usr/arm-linux-gnueabihf'\n"));
        // Built natively: no linker or emulator.
        let host = preset("generic").unwrap().shell_env("x86_64-unknown-linux-gnu");
        assert!(host.contains("FLOE_TRIPLE='x86_64-unknown-linux-gnu'\n") && host.contains("FLOE_QEMU=''\n"));
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn host_checks_follow_the_architecture() {
        let arch = std::env::consts::ARCH;
        // The generic preset runs anywhere; a preset for another architecture nowhere else.
        assert!(preset("generic").unwrap().check_host().is_ok());
        for p in PRESETS.iter().filter(|p| !p.arch.is_empty() && p.arch != arch) {
            let e = p.check_host().unwrap_err();
            assert!(e.contains(arch) && e.contains(p.arch), "{e}");
        }
        assert!(check_host(arch, ["no-such-feature"]).unwrap_err().contains("lacks no-such-feature"));
        assert!(host_preset().check_host().is_ok());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            host_preset().name,
            if std::arch::is_x86_feature_detected!("avx512f") {
                "x86_64-avx512"
            } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                "x86_64-avx2"
            } else {
                "generic"
            }
        );
    }
}
