//! Footprint: crates in the normal dependency tree, clean release build times and
//! binary sizes of the `brook` CLI and of `official-tail`.

use super::*;

#[derive(Debug, Default, Clone)]
pub(super) struct Footprint {
    pub(super) brook_crates: Option<usize>,
    /// `benches/minimal-tail`: the same program as `official-tail`, on brook.
    pub(super) brook_minimal_crates: Option<usize>,
    pub(super) official_crates: Option<usize>,
    pub(super) brook_build_s: Option<f64>,
    pub(super) official_build_s: Option<f64>,
    pub(super) brook_size: Option<u64>,
    pub(super) official_size: Option<u64>,
    pub(super) brook_stripped: Option<u64>,
    pub(super) official_stripped: Option<u64>,
    pub(super) errors: Vec<String>,
}

/// The distinct `name vX.Y.Z` packages in `cargo tree --prefix none` output.
pub(super) fn count_crates(tree: &str) -> usize {
    let mut names: Vec<String> = tree
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let version = parts.next()?;
            version
                .starts_with('v')
                .then(|| format!("{name} {version}"))
        })
        .collect();
    names.sort();
    names.dedup();
    names.len()
}

pub(super) fn capture(cmd: &mut Command) -> Result<String> {
    let line = display_command(cmd);
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .context(|| format!("could not run `{line}`"))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn stripped_size(bin: &Path, tmp: &Path) -> Option<u64> {
    let out = tmp.join(format!("{}.stripped", bin.file_name()?.to_string_lossy()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .ok()?
        .success();
    let size = ok.then(|| fs::metadata(&out).ok().map(|m| m.len()))??;
    let _removed = fs::remove_file(&out);
    Some(size)
}

pub(super) fn footprint(root: &Path, clean_builds: bool) -> Footprint {
    let mut f = Footprint::default();
    let compare = root.join("benches").join("compare");
    match capture(cargo().args([
        "tree",
        "-e",
        "normal",
        "--prefix",
        "none",
        "-p",
        "brook-cli",
    ])) {
        Ok(t) => f.brook_crates = Some(count_crates(&t)),
        Err(e) => f.errors.push(e.to_string()),
    }
    match capture(cargo().args([
        "tree",
        "-e",
        "normal",
        "--prefix",
        "none",
        "-p",
        "brook-minimal-tail",
    ])) {
        Ok(t) => f.brook_minimal_crates = Some(count_crates(&t)),
        Err(e) => f.errors.push(e.to_string()),
    }
    match capture(cargo().current_dir(&compare).args([
        "tree",
        "-e",
        "normal",
        "--prefix",
        "none",
        "-p",
        "official-tail",
    ])) {
        Ok(t) => f.official_crates = Some(count_crates(&t)),
        Err(e) => f.errors.push(e.to_string()),
    }
    let base = root.join("target").join("bench-footprint");
    let brook_dir = base.join("brook");
    let official_dir = base.join("official");
    let brook_bin = brook_dir.join("release").join("brook");
    let official_bin = official_dir.join("release").join("official-tail");
    let timed = |cmd: &mut Command, dir: &Path, clean: bool| -> Result<f64> {
        if clean && dir.exists() {
            fs::remove_dir_all(dir).context(|| format!("could not clear {}", dir.display()))?;
        }
        let start = Instant::now();
        crate::run(cmd.arg("--target-dir").arg(dir))?;
        Ok(start.elapsed().as_secs_f64())
    };
    eprintln!(
        "footprint: release builds{}",
        if clean_builds {
            " from clean (this takes minutes)"
        } else {
            ""
        }
    );
    match timed(
        cargo().args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "brook-cli",
            "--bin",
            "brook",
        ]),
        &brook_dir,
        clean_builds,
    ) {
        Ok(s) if clean_builds => f.brook_build_s = Some(s),
        Ok(_) => {}
        Err(e) => f.errors.push(e.to_string()),
    }
    match timed(
        cargo().current_dir(&compare).args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "official-tail",
        ]),
        &official_dir,
        clean_builds,
    ) {
        Ok(s) if clean_builds => f.official_build_s = Some(s),
        Ok(_) => {}
        Err(e) => f.errors.push(e.to_string()),
    }
    f.brook_size = fs::metadata(&brook_bin).ok().map(|m| m.len());
    f.official_size = fs::metadata(&official_bin).ok().map(|m| m.len());
    f.brook_stripped = stripped_size(&brook_bin, &base);
    f.official_stripped = stripped_size(&official_bin, &base);
    f
}
