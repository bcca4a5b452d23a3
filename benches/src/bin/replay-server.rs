//! `replay-server`: brook-testkit's [`ReplayServer`] as a process, so that brook's bench
//! driver and the official driver's hit the same server.
//!
//! ```text
//! replay-server [--events N] [--size BYTES] [--cursor-id ID] [--delay-ms MS]
//! ```
//!
//! Every getMore returns the same `N` insert events of about `BYTES` bytes (0 events: idle
//! round trips), after `MS` milliseconds if given. It prints one JSON line,
//! `{"port": P, "uri": "...", "get_more_reply_len": L, "events": N}`, then serves on a
//! single thread until its standard input is closed.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use brook_benches::{COLL, CURSOR_ID, DB, change_event_sized};
use brook_testkit::{ReplayConfig, ReplayServer};

struct Args {
    events: u64,
    size: usize,
    cursor_id: i64,
    delay_ms: u64,
}

fn parse() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        events: 1,
        size: brook_benches::SMALL_EVENT,
        cursor_id: CURSOR_ID,
        delay_ms: 0,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("events") => args.events = parser.value()?.parse()?,
            Long("size") => args.size = parser.value()?.parse()?,
            Long("cursor-id") => args.cursor_id = parser.value()?.parse()?,
            Long("delay-ms") => args.delay_ms = parser.value()?.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(args)
}

async fn serve(args: Args) -> std::io::Result<()> {
    let batch = (0..args.events)
        .map(|i| change_event_sized(i, args.size))
        .collect();
    let mut config = ReplayConfig::new(batch)
        .with_cursor_id(args.cursor_id)
        .with_namespace(format!("{DB}.{COLL}"));
    if args.delay_ms > 0 {
        config = config.with_get_more_delay(Duration::from_millis(args.delay_ms));
    }
    let server = ReplayServer::start(config).await?;
    println!(
        "{}",
        serde_json::json!({
            "port": server.addr().port(),
            "uri": server.uri(),
            "get_more_reply_len": server.get_more_reply_len(),
            "events": args.events,
        })
    );
    // Serve until standard input closes (the parent went away or asked us to stop).
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _gone = tx.send(());
    });
    let _closed = rx.await;
    server.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("replay-server: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("replay-server: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replay-server: {e}");
            ExitCode::FAILURE
        }
    }
}
