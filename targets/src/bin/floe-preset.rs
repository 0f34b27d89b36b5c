//! `floe-preset NAME`: a preset as shell assignments, for targets/cross.sh
//! (`eval "$(cargo run -q -p floe-targets --bin floe-preset -- rpi4-aarch64)"`).
//! `floe-preset --list` prints the preset names, one a line.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--list" => {
            for p in floe_targets::PRESETS {
                println!("{}", p.name);
            }
            ExitCode::SUCCESS
        }
        [name] => match floe_targets::preset(name) {
            Ok(p) => {
                print!("{}", p.shell_env(env!("FLOE_HOST_TRIPLE")));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: floe-preset NAME | --list");
            ExitCode::from(2)
        }
    }
}
