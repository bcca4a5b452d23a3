//! The password never reaches the CLI's output: a known password goes through every
//! error the command line can give (bad flags, bad URIs, refused connections, a peer
//! that is not MongoDB), by the URI, by `MONGODB_URI` and by `--password-file`, and
//! stdout and stderr are searched for it.

use std::process::Output;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::{brook_command, stderr, temp_dir, wait};

const SECRET: &str = "Cli-S3cret-77";

fn assert_clean(what: &str, out: &Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(SECRET), "{what} leaks the password: {all}");
}

async fn run(args: &[String], env_uri: Option<&str>) -> Output {
    let mut cmd = brook_command(args);
    cmd.env_remove("MONGODB_URI");
    if let Some(uri) = env_uri {
        cmd.env("MONGODB_URI", uri);
    }
    wait(cmd.spawn().expect("spawn brook")).await
}

async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    drop(listener);
    address
}

async fn http_peer() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            });
        }
    });
    address
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_shows_the_password() {
    let refused = closed_port().await;
    let http = http_peer().await;
    let quick = "serverSelectionTimeoutMS=300";
    let with_pw = |host: &str, query: &str| format!("mongodb://app:{SECRET}@{host}/?{query}");
    let dir = temp_dir("secrets");
    let pw_file = dir.join("pw");
    std::fs::write(&pw_file, format!("{SECRET}\n")).expect("write the password file");
    let pw_file = pw_file.to_string_lossy().into_owned();

    let mut cases: Vec<(String, Vec<String>, Option<String>)> = Vec::new();
    for command in ["tail", "demo-writer", "bench"] {
        // A refused connection, a bad option, a malformed URI, a bad flag.
        for uri in [
            with_pw(&refused, quick),
            with_pw(&refused, &format!("{quick}&w")),
            format!("mongodb://app:{SECRET}@{refused}:0/"),
            with_pw(&http, quick),
        ] {
            cases.push((
                format!("{command} {}", brook::redact_uri(&uri)),
                strings(&[command, &uri, "shop.orders"]),
                None,
            ));
            cases.push((
                format!("{command} with a bad flag"),
                strings(&[command, &uri, "shop.orders", "--frob"]),
                None,
            ));
            // The same URI from MONGODB_URI.
            cases.push((
                format!("{command} MONGODB_URI={}", brook::redact_uri(&uri)),
                strings(&[command, "shop.orders"]),
                Some(uri.clone()),
            ));
        }
        // The password from a file.
        cases.push((
            format!("{command} --password-file"),
            strings(&[
                command,
                &format!("mongodb://app@{refused}/?{quick}"),
                "shop.orders",
                "--password-file",
                &pw_file,
            ]),
            None,
        ));
    }
    for (what, args, env_uri) in cases {
        let out = run(&args, env_uri.as_deref()).await;
        assert!(!out.status.success(), "{what}: should fail");
        assert!(!stderr(&out).is_empty(), "{what}: says why");
        assert_clean(&what, &out);
    }

    // The error names the peer for what it is.
    let out = run(
        &strings(&[
            "tail",
            &format!("mongodb://{http}/?{quick}&directConnection=true"),
            "shop.orders",
        ]),
        None,
    )
    .await;
    assert!(
        stderr(&out).contains("not a MongoDB server"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(dir);
}
