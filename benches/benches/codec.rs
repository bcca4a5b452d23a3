//! The codec: decoding and encoding a getMore reply of 1, 100 and 10,000 change events
//! (about 300 bytes each).
//!
//! * `decode`: `brook_wire::decode` + the getMore cursor-reply parse (the batch handed
//!   out as `SharedDoc` slices of the frame's buffer), next to `memcpy` (copying the same
//!   bytes into a new `Vec`) so that results read as ratios to a plain copy.
//! * `encode`: writing the reply frame with brook-wire from an already serialised body,
//!   and `serialize+encode` from a `bson::Document`, next to the same `memcpy`.
//!
//! * `event_decode`: one change event (~300 B and ~2 KB, `fullDocument` as the bench's
//!   `Order`) into a typed `ChangeStreamEvent<Order>`: `from_slice` (brook's direct
//!   decoder) next to `serde` (the derived serde decoder over the same bytes, which
//!   `from_slice` falls back to), and into a `bson::Document` as a third reference.
//!
//! Each of `decode` and `encode` is reported twice: in bytes/s (`*_bytes` groups) and in events/s (`*_events`).
//! Measurement time is kept short (3 s) so that the whole file runs in a few minutes.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use brook::ChangeStreamEvent;
use brook_benches::{
    LARGE_EVENT, Order, SMALL_EVENT, change_event_sized, decode_get_more, encode_reply,
    get_more_reply, get_more_reply_body, get_more_reply_frame, serialize_and_encode_reply,
};

const SIZES: [usize; 3] = [1, 100, 10_000];

fn batch_size(events: usize) -> BatchSize {
    if events >= 1_000 {
        BatchSize::LargeInput
    } else {
        BatchSize::SmallInput
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

fn decode(c: &mut Criterion) {
    for unit in ["bytes", "events"] {
        let mut group = c.benchmark_group(format!("decode_{unit}"));
        for &n in &SIZES {
            let frame = match get_more_reply_frame(n) {
                Ok(f) => f,
                Err(e) => panic!("cannot build the {n}-event reply: {e}"),
            };
            group.throughput(if unit == "bytes" {
                Throughput::Bytes(frame.len() as u64)
            } else {
                Throughput::Elements(n as u64)
            });
            group.bench_with_input(BenchmarkId::new("memcpy", n), &frame, |b, frame| {
                b.iter(|| black_box(frame.to_vec()));
            });
            group.bench_with_input(BenchmarkId::new("decode+parse", n), &frame, |b, frame| {
                b.iter_batched(
                    || BytesMut::from(&frame[..]),
                    |mut buf| match decode_get_more(&mut buf) {
                        Ok(reply) => {
                            assert_eq!(reply.batch.len(), n);
                            reply
                        }
                        Err(e) => panic!("decode failed: {e}"),
                    },
                    batch_size(n),
                );
            });
        }
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    for unit in ["bytes", "events"] {
        let mut group = c.benchmark_group(format!("encode_{unit}"));
        for &n in &SIZES {
            let doc = get_more_reply(n);
            let body = match get_more_reply_body(n) {
                Ok(b) => b,
                Err(e) => panic!("cannot build the {n}-event reply: {e}"),
            };
            let frame_len = body.len() + 21;
            group.throughput(if unit == "bytes" {
                Throughput::Bytes(frame_len as u64)
            } else {
                Throughput::Elements(n as u64)
            });
            let bytes = body.as_bytes().to_vec();
            group.bench_with_input(BenchmarkId::new("memcpy", n), &bytes, |b, bytes| {
                b.iter(|| black_box(bytes.clone()));
            });
            group.bench_with_input(BenchmarkId::new("encode", n), &body, |b, body| {
                b.iter(|| match encode_reply(body) {
                    Ok(frame) => frame,
                    Err(e) => panic!("encode failed: {e}"),
                });
            });
            group.bench_with_input(BenchmarkId::new("serialize+encode", n), &doc, |b, doc| {
                b.iter(|| match serialize_and_encode_reply(doc) {
                    Ok(frame) => frame,
                    Err(e) => panic!("encode failed: {e}"),
                });
            });
        }
        group.finish();
    }
}

fn event_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_decode");
    group.throughput(Throughput::Elements(1));
    for (name, size) in [("300B", SMALL_EVENT), ("2KB", LARGE_EVENT)] {
        let bytes = match bson::serialize_to_vec(&change_event_sized(7, size)) {
            Ok(b) => b,
            Err(e) => panic!("cannot serialise the {name} event: {e}"),
        };
        group.bench_with_input(BenchmarkId::new("from_slice", name), &bytes, |b, bytes| {
            b.iter(|| black_box(ChangeStreamEvent::<Order>::from_slice(bytes).is_ok()));
        });
        group.bench_with_input(BenchmarkId::new("serde", name), &bytes, |b, bytes| {
            b.iter(|| {
                black_box(bson::deserialize_from_slice::<ChangeStreamEvent<Order>>(bytes).is_ok())
            });
        });
        group.bench_with_input(BenchmarkId::new("document", name), &bytes, |b, bytes| {
            b.iter(|| black_box(bson::deserialize_from_slice::<bson::Document>(bytes).is_ok()));
        });
    }
    group.finish();
}

criterion_group! {
    name = codec;
    config = config();
    targets = decode, encode, event_decode
}
criterion_main!(codec);
