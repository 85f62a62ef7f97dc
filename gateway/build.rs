//! Embeds the web console (`ui/`) in the binary: writes `$OUT_DIR/ui_assets.rs`, a table
//! of every file under `ui/` (path relative to it, bytes by `include_bytes!`).

use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut table = String::from("&[\n");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let name = file
            .strip_prefix(&root)
            .expect("under ui/")
            .to_str()
            .expect("ui/ file names are UTF-8")
            .replace('\\', "/");
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({path:?}) as &[u8]),\n",
            path = file.display().to_string()
        ));
    }
    table.push(']');
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("ui_assets.rs"), table).expect("OUT_DIR is writable");
}

/// Every file under `dir`, directories walked, hidden files skipped.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
