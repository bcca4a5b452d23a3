//! The nx-27017 peer: a MongoDB wire-protocol server on SQLite (from PyPI), used as the
//! real, independent server of the integration tests.
//!
//! - [`install`] creates a venv under `target/brook-venv` and pip installs [`PINS`] into it
//!   (skipped when a stamp file says the same pins are already there).
//! - [`Peer::start`] starts one instance on a free loopback port (`-p 0`), with its own
//!   pid file, log and data directory under `target/brook-peer/<name>/`, and waits until it
//!   logs the port it bound. The returned [`Peer`] is a guard: dropping it stops the
//!   instance (SIGTERM, then SIGKILL after [`STOP_GRACE`]), so the peer goes away even
//!   when tests fail or xtask panics.
//! - `cargo xtask peer start|stop|status` manage one long-running instance by hand.
//!
//! What nx-27017 does and where it deviates from MongoDB: `docs/nx-27017.md`.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{Context, Error, Result, display_command, repo_root, run};

/// The Python packages installed into the venv, pinned.
pub(crate) const PINS: [&str; 3] = ["nx-27017==0.8.1", "neosqlite==1.17.2", "pymongo==4.20.1"];

/// How long a stopping peer gets between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a starting peer gets to log the port it bound.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a starting or stopping peer is looked at.
const POLL: Duration = Duration::from_millis(25);

/// The name of the instance `cargo xtask peer start` manages.
const MANUAL: &str = "manual";

/// The prefix of the instances `cargo xtask test` starts (followed by xtask's pid).
const TEST_PREFIX: &str = "test-";

/// The file in the venv that records which pins were installed.
const STAMP: &str = ".brook-pins";

/// The venv that holds nx-27017 and pymongo.
pub(crate) fn venv_dir() -> PathBuf {
    repo_root().join("target").join("brook-venv")
}

/// Where each instance keeps its pid file, log and data.
fn peers_dir() -> PathBuf {
    repo_root().join("target").join("brook-peer")
}

fn venv_bin(name: &str) -> PathBuf {
    venv_dir().join("bin").join(name)
}

fn stamp_contents() -> String {
    let mut s = PINS.join("\n");
    s.push('\n');
    s
}

/// Whether the venv's python runs and can import what we installed.
fn venv_works() -> bool {
    python_succeeds(&venv_bin("python"), "import nx_27017, neosqlite, pymongo")
}

/// Creates the venv and installs [`PINS`] into it, unless the stamp says that is done.
///
/// Pythons whose venv module cannot bootstrap pip (Debian's without `python3-venv`) get a
/// venv made `--without-pip`, filled by the outer Python's pip (`pip --python <venv>`).
pub(crate) fn install() -> Result<()> {
    let venv = venv_dir();
    let python = venv_bin("python");
    let stamp = venv.join(STAMP);
    let wanted = stamp_contents();
    if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)
        && venv_bin("nx-27017").is_file()
        && venv_works()
    {
        eprintln!("peer: {} already up to date", venv.display());
        return Ok(());
    }
    let started = Instant::now();
    if !python_succeeds(&python, "") {
        create_venv(&venv)?;
    }
    // A stale stamp must not survive a failed install.
    match fs::remove_file(&stamp) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(Error::new(format!(
                "could not remove {}: {e}",
                stamp.display()
            )));
        }
        _ => {}
    }
    let mut pip = if python_succeeds(&python, "import pip") {
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip"]);
        pip
    } else {
        let mut pip = Command::new(outer_python());
        pip.args(["-m", "pip", "--python"]).arg(&python);
        pip
    };
    pip.args([
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
    ])
    .args(PINS);
    run(&mut pip)?;
    if !venv_works() {
        return Err(Error::new(format!(
            "pip installed {} but the venv's python cannot import them",
            PINS.join(" ")
        )));
    }
    fs::write(&stamp, wanted).context(|| format!("could not write {}", stamp.display()))?;
    eprintln!(
        "peer: installed {} into {} in {:.1}s",
        PINS.join(" "),
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether `python -c <code>` exits 0 (quietly).
fn python_succeeds(python: &Path, code: &str) -> bool {
    Command::new(python)
        .args(["-c", code])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Python that creates the venv: `$BROOK_PYTHON`, else `python3`.
fn outer_python() -> PathBuf {
    std::env::var_os("BROOK_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// Creates the venv at `venv` (removing a broken one first), with pip when the Python can.
fn create_venv(venv: &Path) -> Result<()> {
    let clear = || -> Result<()> {
        if venv.exists() {
            fs::remove_dir_all(venv)
                .context(|| format!("could not remove the broken venv {}", venv.display()))?;
        }
        Ok(())
    };
    clear()?;
    if let Some(parent) = venv.parent() {
        fs::create_dir_all(parent).context(|| format!("could not create {}", parent.display()))?;
    }
    let python = outer_python();
    if run(Command::new(&python).arg("-m").arg("venv").arg(venv)).is_ok() {
        return Ok(());
    }
    eprintln!("peer: retrying without pip in the venv (the outer pip will fill it)");
    clear()?;
    run(Command::new(&python)
        .args(["-m", "venv", "--without-pip"])
        .arg(venv))
    .map_err(|e| {
        Error::new(format!(
            "{e}\n  creating the venv needs Python 3 with its venv module \
             (set BROOK_PYTHON to use another interpreter)"
        ))
    })
}

/// How a started peer relates to xtask.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lifetime {
    /// Stopped when its [`Peer`] guard drops; in xtask's process group (so Ctrl-C stops it
    /// too); starts from an empty data directory.
    Guarded,
    /// Keeps running after xtask exits; in its own process group; keeps its data.
    Detached,
}

/// One running nx-27017 instance. Dropping it stops the instance (unless detached).
#[derive(Debug)]
pub(crate) struct Peer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// The files of one instance, all under `target/brook-peer/<name>/`.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        Files {
            dir: peers_dir().join(name),
        }
    }
    fn pid(&self) -> PathBuf {
        self.dir.join("nx-27017.pid")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("nx-27017.log")
    }
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn uri(&self) -> PathBuf {
        self.dir.join("uri")
    }
}

impl Peer {
    /// Starts the instance `cargo xtask test` uses: named after xtask's pid, with fresh
    /// data, stopped when the guard drops. Instances left behind by an xtask that died
    /// (e.g. killed by a CI timeout) are stopped first.
    pub(crate) fn start_for_test() -> Result<Peer> {
        reap_stale_test_peers();
        Peer::start(
            &format!("{TEST_PREFIX}{}", std::process::id()),
            Lifetime::Guarded,
        )
    }

    fn start(name: &str, lifetime: Lifetime) -> Result<Peer> {
        let files = Files::new(name);
        let exe = venv_bin("nx-27017");
        if !exe.is_file() {
            return Err(Error::new(format!(
                "{} is missing: run `cargo xtask peer install`",
                exe.display()
            )));
        }
        if lifetime == Lifetime::Guarded && files.dir.exists() {
            fs::remove_dir_all(&files.dir)
                .context(|| format!("could not clear {}", files.dir.display()))?;
        }
        fs::create_dir_all(files.data())
            .context(|| format!("could not create {}", files.data().display()))?;
        // The log is truncated: the port is read from this run's lines only.
        let log = File::create(files.log())
            .context(|| format!("could not create {}", files.log().display()))?;
        let log_err = log
            .try_clone()
            .context(|| format!("could not reopen {}", files.log().display()))?;

        let mut cmd = Command::new(&exe);
        cmd.arg("--host")
            .arg("127.0.0.1")
            .arg("-p")
            .arg("0")
            .arg("--pid-file")
            .arg(files.pid())
            // nx-27017 logs the same lines to stderr and to --log-file; stderr alone also
            // carries Python's tracebacks, so it is the one log kept.
            .arg("--log-file")
            .arg("/dev/null")
            .arg("--data-dir")
            .arg(files.data())
            .current_dir(&files.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if lifetime == Lifetime::Detached {
            cmd.process_group(0);
        }
        let line = display_command(&cmd);
        let child = cmd
            .spawn()
            .context(|| format!("could not start `{line}`"))?;
        let mut peer = Peer {
            child: Some(child),
            port: 0,
            dir: files.dir.clone(),
        };
        // On error, `peer` drops here and the half-started instance is stopped.
        peer.port = peer.wait_for_port(&files.log())?;
        Ok(peer)
    }

    fn wait_for_port(&mut self, log: &Path) -> Result<u16> {
        let started = Instant::now();
        loop {
            let text = fs::read(log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if let Some(port) = parse_listening_port(&text) {
                return Ok(port);
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::new(format!(
                    "nx-27017 exited ({status}) before it logged its port; the end of {}:\n{}",
                    log.display(),
                    tail(&text, 20)
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::new(format!(
                    "nx-27017 did not log `Listening on <host>:<port>` within {}s; the end of {}:\n{}",
                    START_TIMEOUT.as_secs(),
                    log.display(),
                    tail(&text, 20)
                )));
            }
            sleep(POLL);
        }
    }

    /// The loopback port the instance listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The connection string of the instance.
    pub(crate) fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// The instance's log file.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("nx-27017.log")
    }

    /// Stops the instance now: SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub(crate) fn stop(mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => stop_child(&mut child).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Lets the instance outlive this guard (for `cargo xtask peer start`).
    fn detach(mut self) {
        // A Child that is dropped is neither killed nor waited for.
        self.child = None;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = stop_child(&mut child)
        {
            eprintln!("xtask: could not stop nx-27017 (pid {}): {e}", child.id());
        }
    }
}

/// How a peer ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
}

/// Sends `signal` (a name such as `TERM`) to `pid`, through the shell's `kill` builtin:
/// std can only send SIGKILL, and a `kill` binary is not on every machine.
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\" 2>/dev/null", "sh", signal])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .context(|| format!("could not run `sh -c kill -s {signal} {pid}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "`kill -s {signal} {pid}` failed ({status})"
        )))
    }
}

/// Stops a child we spawned: SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL.
fn stop_child(child: &mut Child) -> Result<Stopped> {
    let pid = child.id();
    if child
        .try_wait()
        .context(|| format!("could not wait for pid {pid}"))?
        .is_some()
    {
        return Ok(Stopped::NotRunning);
    }
    // If TERM cannot be sent, SIGKILL below still ends it.
    let termed = signal(pid, "TERM").is_ok();
    let deadline = Instant::now() + STOP_GRACE;
    while termed && Instant::now() < deadline {
        if child
            .try_wait()
            .context(|| format!("could not wait for pid {pid}"))?
            .is_some()
        {
            return Ok(Stopped::Terminated);
        }
        sleep(POLL);
    }
    match child.kill() {
        Ok(()) => {}
        // Exited between the last look and the kill.
        Err(e) if e.kind() == ErrorKind::InvalidInput => {}
        Err(e) => return Err(Error::new(format!("could not SIGKILL pid {pid}: {e}"))),
    }
    child
        .wait()
        .context(|| format!("could not wait for pid {pid}"))?;
    Ok(Stopped::Killed)
}

/// What `/proc` says about a pid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ProcState {
    /// No such process, or a zombie.
    Gone,
    /// A live nx-27017.
    Nx,
    /// A live process that is not nx-27017 (the pid was reused).
    Other,
}

fn proc_state(pid: u32) -> ProcState {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !Path::new("/proc/self").exists() {
        // No procfs: ask the shell, and trust the pid file's word that it is nx-27017.
        return if signal(pid, "0").is_ok() {
            ProcState::Nx
        } else {
            ProcState::Gone
        };
    }
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
        return ProcState::Gone;
    };
    if process_is_zombie(&stat) {
        return ProcState::Gone;
    }
    let cmdline = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    if cmdline.contains("nx-27017") || cmdline.contains("nx_27017") {
        ProcState::Nx
    } else {
        ProcState::Other
    }
}

/// Whether a `/proc/<pid>/stat` line says the process has exited (zombie or dead).
fn process_is_zombie(stat: &str) -> bool {
    // "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('Z' | 'X' | 'x'))
}

/// Stops an instance known only by its pid (one started by an earlier xtask).
fn stop_pid(pid: u32) -> Result<Stopped> {
    if proc_state(pid) != ProcState::Nx {
        return Ok(Stopped::NotRunning);
    }
    signal(pid, "TERM")?;
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if proc_state(pid) == ProcState::Gone {
            return Ok(Stopped::Terminated);
        }
        sleep(POLL);
    }
    if proc_state(pid) == ProcState::Nx {
        signal(pid, "KILL")?;
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if proc_state(pid) == ProcState::Gone {
            return Ok(Stopped::Killed);
        }
        sleep(POLL);
    }
    Err(Error::new(format!(
        "pid {pid} is still running after SIGKILL"
    )))
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Stops the instances of `cargo xtask test` runs whose xtask is gone, and removes their
/// directories. Best effort: a failure here only leaves a stale directory behind.
fn reap_stale_test_peers() {
    let Ok(entries) = fs::read_dir(peers_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(TEST_PREFIX)
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let owner_alive = fs::read_to_string(format!("/proc/{owner}/stat"))
            .is_ok_and(|stat| !process_is_zombie(&stat));
        if owner != std::process::id() && owner_alive {
            continue; // another `cargo xtask test` is running
        }
        let files = Files::new(&name);
        if let Some(pid) = read_pid(&files.pid())
            && let Err(e) = stop_pid(pid)
        {
            eprintln!("xtask: could not stop the stale peer {name} (pid {pid}): {e}");
            continue;
        }
        if let Err(e) = fs::remove_dir_all(&files.dir) {
            eprintln!("xtask: could not remove {}: {e}", files.dir.display());
        }
    }
}

/// The port of nx-27017's `... - Listening on 127.0.0.1:40989` log line (also matches the
/// `--threaded` form `Listening on 127.0.0.1:40989 (threaded mode)`).
/// Only complete lines count: a line still being written could hold half a port.
fn parse_listening_port(log: &str) -> Option<u16> {
    let complete = log.rfind('\n').and_then(|end| log.get(..end))?;
    complete.lines().find_map(|line| {
        let (_, rest) = line.split_once("Listening on ")?;
        let addr = rest.split_whitespace().next()?;
        let (_, port) = addr.rsplit_once(':')?;
        port.parse::<u16>().ok().filter(|&p| p != 0)
    })
}

/// The last `n` lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let shown = lines.get(start..).unwrap_or_default();
    if shown.is_empty() {
        return "    (empty)".to_owned();
    }
    shown
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

const PEER_USAGE: &str = "usage: cargo xtask peer <install|start|stop|status>";

/// `cargo xtask peer ...`.
pub(crate) fn main(args: &[String]) -> Result<()> {
    match args {
        [cmd] if cmd == "install" => install(),
        [cmd] if cmd == "start" => start_manual(),
        [cmd] if cmd == "stop" => stop_manual(),
        [cmd] if cmd == "status" => status_manual(),
        _ => Err(Error::new(PEER_USAGE)),
    }
}

fn start_manual() -> Result<()> {
    let files = Files::new(MANUAL);
    if let Some(pid) = read_pid(&files.pid())
        && proc_state(pid) == ProcState::Nx
    {
        let uri = fs::read_to_string(files.uri()).unwrap_or_default();
        return Err(Error::new(format!(
            "a peer is already running (pid {pid}, {}); `cargo xtask peer stop` first",
            uri.trim()
        )));
    }
    install()?;
    let peer = Peer::start(MANUAL, Lifetime::Detached)?;
    let uri = peer.uri();
    fs::write(files.uri(), format!("{uri}\n"))
        .context(|| format!("could not write {}", files.uri().display()))?;
    eprintln!(
        "peer: nx-27017 listening on 127.0.0.1:{} (pid file {}, log {}, data {})",
        peer.port(),
        files.pid().display(),
        peer.log_path().display(),
        files.data().display()
    );
    eprintln!("peer: stop it with `cargo xtask peer stop`");
    peer.detach();
    println!("MONGODB_URI={uri}");
    Ok(())
}

fn stop_manual() -> Result<()> {
    let files = Files::new(MANUAL);
    let outcome = match read_pid(&files.pid()) {
        Some(pid) => stop_pid(pid)?,
        None => Stopped::NotRunning,
    };
    for path in [files.pid(), files.uri()] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(Error::new(format!(
                    "could not remove {}: {e}",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    let said = match outcome {
        Stopped::NotRunning => "no peer was running",
        Stopped::Terminated => "stopped (SIGTERM)",
        Stopped::Killed => "stopped (SIGKILL after SIGTERM was ignored)",
    };
    eprintln!("peer: {said}");
    Ok(())
}

fn status_manual() -> Result<()> {
    let files = Files::new(MANUAL);
    match read_pid(&files.pid()) {
        Some(pid) if proc_state(pid) == ProcState::Nx => {
            let uri = fs::read_to_string(files.uri()).unwrap_or_default();
            println!("running (pid {pid}): MONGODB_URI={}", uri.trim());
            Ok(())
        }
        _ => Err(Error::new(
            "no peer is running (`cargo xtask peer start` starts one)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_read_from_the_listening_line() {
        let log = "\
2026-11-25 20:30:43,674 - nx_27017 - INFO - [3703] - Starting NX-27017 with db_path=nx-27017.db, host=127.0.0.1, port=0, journal_mode=WAL
2026-11-25 20:30:43,677 - nx_27017 - INFO - [3703] - Listening on 127.0.0.1:37147
";
        assert_eq!(parse_listening_port(log), Some(37147));
        assert_eq!(
            parse_listening_port("x - Listening on 127.0.0.1:40001 (threaded mode)\n"),
            Some(40001)
        );
        assert_eq!(
            parse_listening_port("x - Listening on ::1:27018\n"),
            Some(27018)
        );
    }

    #[test]
    fn no_port_without_a_complete_listening_line() {
        assert_eq!(parse_listening_port(""), None);
        assert_eq!(parse_listening_port("Starting NX-27017 ... port=0\n"), None);
        assert_eq!(parse_listening_port("Listening on 127.0.0.1:\n"), None);
        assert_eq!(parse_listening_port("Listening on 127.0.0.1:0\n"), None);
        assert_eq!(parse_listening_port("Listening on 127.0.0.1:99999\n"), None);
        // A line still being written is not read.
        assert_eq!(parse_listening_port("Listening on 127.0.0.1:2701"), None);
        assert_eq!(
            parse_listening_port("Listening on 127.0.0.1:2701\n"),
            Some(2701)
        );
    }

    #[test]
    fn zombie_state_follows_the_last_parenthesis() {
        assert!(process_is_zombie("42 (python3) Z 1 42 42 0"));
        assert!(process_is_zombie("42 (a) b) X 1"));
        assert!(!process_is_zombie("42 (nx (x) Z) S 1 42"));
        assert!(!process_is_zombie("42 (python3) R 1"));
        assert!(!process_is_zombie(""));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "    b\n    c");
        assert_eq!(tail("a\n", 5), "    a");
        assert_eq!(tail("", 5), "    (empty)");
    }

    #[test]
    fn stamp_names_every_pin() {
        let stamp = stamp_contents();
        for pin in PINS {
            assert!(
                stamp.lines().any(|l| l == pin),
                "{pin} missing from {stamp:?}"
            );
        }
    }

    #[test]
    fn this_process_is_not_taken_for_nx() {
        assert_eq!(proc_state(std::process::id()), ProcState::Other);
        // pid_max is at most 2^22 on Linux.
        assert_eq!(proc_state(u32::MAX), ProcState::Gone);
    }
}
