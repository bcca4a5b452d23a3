//! Running the built `brook` binary.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long one run of the binary may take before the test fails.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test.
pub(crate) fn brook_command(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brook"));
    // The command line alone says where to connect (the environment may carry a
    // MONGODB_URI for the live tests).
    cmd.env_remove("MONGODB_URI");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Sends `signal` (e.g. `TERM`) to `pid` with the shell's `kill`.
pub(crate) fn kill(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", signal])
        .arg(pid.to_string())
        .status();
}

/// Runs `brook` with `args` to the end (killed, and the test failed, after
/// [`RUN_TIMEOUT`]), without blocking the runtime the fake server runs on.
pub(crate) async fn run_brook(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let child = brook_command(&args).spawn().expect("spawn brook");
    wait(child).await
}

/// Waits for a spawned `brook` (see [`run_brook`]).
pub(crate) async fn wait(child: std::process::Child) -> Output {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(RUN_TIMEOUT, waiting).await {
        Ok(joined) => joined.expect("join").expect("wait for brook"),
        Err(_) => {
            kill(pid, "KILL");
            panic!("brook did not exit within {RUN_TIMEOUT:?}");
        }
    }
}

/// The lines of stdout.
pub(crate) fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// stderr as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh directory for one test's files.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brook-cli-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}
