//! The deployment is there: a TCP connection to its first seed succeeds.

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use brook_integration_tests::{first_seed_address, mongodb_uri};

#[test]
fn peer_accepts_a_tcp_connection_and_waits_for_the_client() {
    let uri = mongodb_uri();
    let seed = first_seed_address(&uri);
    let addrs: Vec<_> = seed
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("cannot resolve {seed} (from MONGODB_URI={uri}): {e}"))
        .collect();
    assert!(!addrs.is_empty(), "{seed} resolves to no address");
    let mut errors = Vec::new();
    let mut stream = addrs
        .iter()
        .find_map(|addr| {
            TcpStream::connect_timeout(addr, Duration::from_secs(5))
                .map_err(|e| errors.push(format!("{addr}: {e}")))
                .ok()
        })
        .unwrap_or_else(|| panic!("no TCP connection to {seed}: {}", errors.join("; ")));

    // A MongoDB server speaks only when spoken to: it neither closes the connection nor
    // sends anything before the client's first message.
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set a read timeout");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("{seed} closed the connection before the client spoke"),
        Ok(_) => panic!("{seed} sent bytes before the client spoke"),
        Err(e) => panic!("reading from {seed} failed: {e}"),
    }
}
