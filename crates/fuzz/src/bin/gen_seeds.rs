//! Writes the seed corpora: `cargo run -p ringkv-fuzz --bin gen-seeds [corpus dir]`
//! (default `fuzz/corpus` of the workspace). Existing files of the same name are replaced;
//! inputs the fuzzer added are left alone.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus"),
        PathBuf::from,
    );
    match ringkv_fuzz::seeds::write_all(&dir) {
        Ok(n) => {
            println!("wrote {n} seeds under {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-seeds: could not write under {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
