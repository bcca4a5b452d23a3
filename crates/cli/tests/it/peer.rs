//! A real, independent server for the tests that need one: the deployment of
//! `MONGODB_URI` when it is set (`cargo xtask test` starts an nx-27017 and sets it;
//! `--live` names any deployment), else an nx-27017 started here from the venv that
//! `cargo xtask peer install` makes. Without either the test fails, saying what to run.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{kill, temp_dir};

/// How long nx-27017 gets to log the port it bound.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A deployment to run against; an nx-27017 started for it is stopped on drop.
pub(crate) struct Peer {
    uri: String,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Peer {
    /// `MONGODB_URI`, or a fresh nx-27017 named `name` (its files in a temp directory).
    pub(crate) fn start(name: &str) -> Peer {
        if let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
            return Peer {
                uri,
                child: None,
                dir: None,
            };
        }
        // The venv of `cargo xtask peer install`: <repo>/target/brook-venv.
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/brook-venv");
        let program = venv.join("bin").join("nx-27017");
        assert!(
            program.is_file(),
            "no MONGODB_URI and no {}: run `cargo xtask peer install` (or `cargo xtask test`)",
            program.display()
        );
        let dir = temp_dir(&format!("peer-{name}"));
        let log_path = dir.join("nx-27017.log");
        let log = File::create(&log_path).expect("create the peer's log");
        let err_log = log.try_clone().expect("clone the log handle");
        let child = Command::new(&program)
            .arg("-p")
            .arg("0")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--pid-file")
            .arg(dir.join("nx-27017.pid"))
            .arg("--log-file")
            .arg("/dev/null")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .expect("start nx-27017");
        let mut peer = Peer {
            uri: String::new(),
            child: Some(child),
            dir: Some(dir),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("Listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                peer.uri = format!("mongodb://{addr}/");
                return peer;
            }
            let exited = peer
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "nx-27017 exited ({exited:?}): {text}");
            assert!(Instant::now() < deadline, "nx-27017 never listened: {text}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Its connection string.
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
