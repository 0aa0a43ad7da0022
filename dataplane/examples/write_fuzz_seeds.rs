//! Writes the parser fuzzer's seed corpus (`fuzz/seeds/packet_parse/`) from
//! the realistic frame mix: `cargo run -p microseg-dataplane --example
//! write_fuzz_seeds -- fuzz/seeds/packet_parse`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds/packet_parse".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let frames = microseg_dataplane::frames::realistic_mix();
    for (i, frame) in frames.iter().enumerate() {
        std::fs::write(dir.join(format!("mix-{i:02}.bin")), frame)?;
    }
    println!("wrote {} seeds to {}", frames.len(), dir.display());
    Ok(())
}
