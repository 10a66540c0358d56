//! Extracts every ```rust block of the top-level README into `$OUT_DIR`, so that
//! `tests/readme.rs` compiles each one exactly as a reader would paste it, and runs
//! the ones that have a `main` against a throwaway etcd.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read at run time: a build script binary reused from another checkout of the same
    // target directory must still read this checkout's README.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let readme_path = Path::new(&manifest_dir).join("../README.md");
    println!("cargo:rerun-if-changed={}", readme_path.display());
    let readme = std::fs::read_to_string(&readme_path).expect("read README.md");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut blocks = String::new();
    let mut n = 0;
    let mut lines = readme.lines().enumerate();
    while let Some((at, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let is_rust = info.split(',').next() == Some("rust");
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if !is_rust {
            continue;
        }
        n += 1;
        let file = out.join(format!("readme_block_{n}.rs"));
        std::fs::write(&file, &body).expect("write block");
        let line_no = at + 1;
        let has_main = body.contains("fn main(");
        // A block's `main` is private to its module; a wrapper in the module hands it out.
        let entry = if has_main { "pub(super) fn entry() -> impl std::process::Termination { main() }" } else { "" };
        writeln!(blocks, "/// README.md line {line_no}\n#[allow(dead_code)]\nmod readme_block_{n} {{ include!({:?}); {entry} }}", file.display())
            .unwrap();
        if has_main {
            writeln!(blocks, "#[test]\nfn readme_block_{n}_at_line_{line_no}_runs() {{ run_main(readme_block_{n}::entry) }}")
                .unwrap();
        }
    }
    writeln!(blocks, "const README_RUST_BLOCKS: usize = {n};").unwrap();
    std::fs::write(out.join("readme_blocks.rs"), blocks).expect("write readme_blocks.rs");
}
