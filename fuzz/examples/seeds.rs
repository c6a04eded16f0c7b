//! Writes the seed corpora, `corpus/<target>/seed-<name>`, from real encodings made by mesh's
//! own code (`mesh_agent::fuzzing::seeds`, `mesh_control::fuzzing::seeds`). Run from the
//! repository's root as `cargo xtask fuzz --write-seeds`; existing seeds of the same name are
//! replaced, other corpus files are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = mesh_agent::fuzzing::seeds()
        .into_iter()
        .chain(mesh_control::fuzzing::seeds());
    let mut written = 0;
    for (target, name, bytes) in seeds {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        written += 1;
    }
    println!("wrote {written} seeds under {}", corpus.display());
    Ok(())
}
