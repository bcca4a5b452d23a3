//! `cargo xtask bench`: run brook's criterion benches (`cargo bench -p brook-benches`)
//! and say where criterion put its report.
//!
//! Every argument is handed to `cargo bench` as it is, so
//! `cargo xtask bench -- decode` filters benches and
//! `cargo xtask bench --bench codec -- --save-baseline main` saves a baseline.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package holding the benches.
const PACKAGE: &str = "brook-benches";

/// Entry point: `args` are the arguments after `bench`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") && !args.iter().any(|a| a == "--") {
        println!(
            "usage: cargo xtask bench [cargo bench args] [-- criterion args]\n\n\
             runs `cargo bench -p {PACKAGE}` with the given arguments, then prints where \
             criterion's HTML report is"
        );
        return Ok(());
    }
    let root = repo_root();
    let mut cmd =
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cmd.current_dir(&root).args(bench_args(args));
    let line = format!("cargo {}", bench_args(args).join(" "));
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not run `{line}`: {e}"))?;
    if !status.success() {
        return Err(format!("`{line}` failed ({status})"));
    }
    let criterion_dir = target_dir(&root, std::env::var_os("CARGO_TARGET_DIR")).join("criterion");
    let index = criterion_dir.join("report").join("index.html");
    if index.is_file() {
        println!("criterion report: {}", index.display());
    } else {
        println!(
            "criterion results: {} (no HTML index was written)",
            criterion_dir.display()
        );
    }
    println!(
        "raw estimates: {}/<group>/<bench>/new/estimates.json",
        criterion_dir.display()
    );
    Ok(())
}

/// `cargo` arguments: `bench -p brook-benches` then the user's.
fn bench_args(user: &[String]) -> Vec<String> {
    let mut v = vec!["bench".to_owned(), "-p".to_owned(), PACKAGE.to_owned()];
    v.extend(user.iter().cloned());
    v
}

/// Where cargo writes: `$CARGO_TARGET_DIR` (relative to the repository) or `target/`.
fn target_dir(root: &Path, env: Option<OsString>) -> PathBuf {
    match env {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        }
        _ => root.join("target"),
    }
}

fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_user_arguments_after_the_package() {
        let user = vec![
            "--bench".to_owned(),
            "codec".to_owned(),
            "--".to_owned(),
            "decode".to_owned(),
        ];
        assert_eq!(
            bench_args(&user),
            [
                "bench",
                "-p",
                "brook-benches",
                "--bench",
                "codec",
                "--",
                "decode"
            ]
        );
        assert_eq!(bench_args(&[]), ["bench", "-p", "brook-benches"]);
    }

    #[test]
    fn target_dir_follows_cargo_target_dir() {
        let root = Path::new("/repo");
        assert_eq!(target_dir(root, None), Path::new("/repo/target"));
        assert_eq!(target_dir(root, Some("".into())), Path::new("/repo/target"));
        assert_eq!(target_dir(root, Some("out".into())), Path::new("/repo/out"));
        assert_eq!(target_dir(root, Some("/tmp/t".into())), Path::new("/tmp/t"));
    }

    #[test]
    fn the_bench_package_exists() {
        let manifest = std::fs::read_to_string(repo_root().join("benches").join("Cargo.toml"))
            .expect("benches/Cargo.toml is readable");
        assert!(manifest.contains(&format!("name = \"{PACKAGE}\"")));
    }
}
