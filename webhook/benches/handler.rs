//! The admission handler alone: parse the AdmissionReview, build the patch,
//! serialize the answer. Target: under 50 µs for deployment-pod.json.
//!
//! cargo bench -p rds-iam-webhook --bench handler
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kube_core::admission::AdmissionReview;
use rds_iam_webhook::config::AgentConfig;
use rds_iam_webhook::mutate::mutate;
use rds_iam_webhook::pod::Pod;
use rds_iam_webhook::review::{review, to_json, ReviewResult};

// Same allocator as the rds-iam-webhook binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let cfg = AgentConfig::default();
    let mut group = c.benchmark_group("handler");
    for (name, want) in [
        ("deployment-pod.json", ReviewResult::Patched),
        ("irsa-pod.json", ReviewResult::Patched),
        ("two-db-pod.json", ReviewResult::Patched),
        ("plain-pod.json", ReviewResult::AllowedUnchanged),
    ] {
        let body = fixture(name);
        assert_eq!(review(&body, &cfg).unwrap().result, want, "{name}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let reviewed = review(black_box(&body), &cfg).unwrap();
                black_box(to_json(&reviewed).unwrap())
            })
        });
    }
    group.finish();

    // Where the time goes, for deployment-pod.json.
    let body = fixture("deployment-pod.json");
    let mut parts = c.benchmark_group("parts");
    parts.bench_function("parse AdmissionReview<Pod>", |b| {
        b.iter(|| {
            let r: AdmissionReview<Pod> = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(r)
        })
    });
    let review_struct: AdmissionReview<Pod> = serde_json::from_slice(&body).unwrap();
    let pod = review_struct.request.unwrap().object.unwrap();
    parts.bench_function("mutate", |b| {
        b.iter(|| black_box(mutate(black_box(&pod), &cfg).unwrap()))
    });
    parts.bench_function("review (no serialization)", |b| {
        b.iter(|| black_box(review(black_box(&body), &cfg).unwrap()))
    });
    let reviewed = review(&body, &cfg).unwrap();
    parts.bench_function("serialize response", |b| {
        b.iter(|| black_box(to_json(black_box(&reviewed)).unwrap()))
    });
    parts.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
