//! Runs one fake server on a loopback port and prints its URI, for pointing any driver
//! (brook, pymongo, the Node driver...) at it by hand. It serves until its standard input
//! closes (Ctrl-D) or the given number of seconds has passed.
//!
//! ```text
//! cargo run -p brook-testkit --example fake_server -- [--standalone | --replica-set NAME] [--seconds N]
//! ```

use std::time::Duration;

use brook_testkit::{FakeServer, ServerConfig};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ServerConfig::replica_set("rs0");
    let mut seconds: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--standalone" => config = ServerConfig::standalone(),
            "--replica-set" => {
                config = ServerConfig::replica_set(args.next().ok_or("--replica-set NAME")?);
            }
            "--seconds" => seconds = Some(args.next().ok_or("--seconds N")?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let server = FakeServer::start(config).await?;
    println!("{}", server.uri());
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    match seconds {
        Some(s) => {
            let _ = tokio::time::timeout(Duration::from_secs(s), stdin_closed).await;
        }
        None => stdin_closed.await,
    }
    eprintln!("{} commands served", server.commands().len());
    server.shutdown().await;
    Ok(())
}
